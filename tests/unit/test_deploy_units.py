"""
The systemd units shipped in ``toystore/deploy/systemd/`` and the five-host
cluster file of ``docs/deploy.rst``: what could break them when the code
changes.

The units are parsed here (systemd's syntax, not an INI file: keys repeat,
an empty value resets a list, lines continue after a backslash), and their
command lines are parsed by the very option classes twistd would use, with
``--config`` pointing to a copy of a cluster file that loads.  Where
``systemd-analyze`` exists, it verifies them too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

from twisted.application.service import ServiceMaker
from twisted.plugins import toystore_plugins
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from toystore.config import SECRET_ENV, ConfigError, dump, is_loopback, load, read_raw
from toystore.deploy import unit_files

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.rst"

#: Where the units expect toystore's virtualenv, and so twistd.
TWISTD = "/opt/toystore/venv/bin/twistd"
#: The cluster file the units name.
CONFIG = "/etc/toystore/cluster.toml"
#: The file with TOYSTORE_SECRET=...; "-": systemd starts the unit without it.
SECRET_FILE = "-/etc/toystore/secret.env"

CATALOG = "toystore-catalog.service"
FRONTEND = "toystore-frontend.service"
ORDER = "toystore-order@.service"

#: Each unit's plugin.
PLUGIN = {CATALOG: "toystore-catalog", FRONTEND: "toystore-frontend", ORDER: "toystore-order"}

#: A secret for the tests that load the five-host file (at least 16 characters).
SECRET = "deploy-test-secret-0123"


# -- systemd's unit file syntax ----------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """
    A unit file's sections, each a list of ``(key, value)`` in file order
    (keys may repeat).  Blank lines and lines starting with ``#`` or ``;``
    are skipped; a line ending in a backslash continues on the next, the
    backslash read as a space, comment lines inside it skipped (systemd's
    rules).  Any other line must be ``[Section]`` or ``Key=Value``.

    :raises ValueError: naming the line that is neither.
    """
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\"):
            line = line[:-1].rstrip() + " "
            while i < len(lines) and lines[i].strip()[:1] in ("#", ";"):
                i += 1
            if i < len(lines):
                line += lines[i].strip()
                i += 1
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ValueError(f"line {number}: not a section header: {line!r}")
            name = line[1:-1]
            if name in sections:
                raise ValueError(f"line {number}: section [{name}] again")
            current = sections[name] = []
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise ValueError(f"line {number}: not Key=Value: {line!r}")
        if current is None:
            raise ValueError(f"line {number}: {key}= before any section")
        current.append((key, value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section``, an empty assignment resetting the ones before it."""
    found: list[str] = []
    for name, value in unit.get(section, []):
        if name == key:
            found = [] if value == "" else [*found, value]
    return found


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    """The value of a setting given exactly once (an AssertionError otherwise)."""
    found = [value for name, value in unit.get(section, []) if name == key]
    assert len(found) == 1, f"[{section}] {key}= is given {len(found)} times: {found}"
    return found[0]


def expand(text: str, instance: str | None) -> str:
    """Expand the specifiers the units use: ``%i`` (the instance) and ``%%``."""
    used = set(re.findall(r"%(.)", text))
    assert used <= {"i", "%"}, f"specifiers other than %i: {sorted(used)}"
    if "i" in used:
        assert instance is not None, "%i in a unit that is not a template"
    return re.sub(r"%([i%])", lambda m: instance if m.group(1) == "i" else "%", text)


def exec_start(unit: dict[str, list[tuple[str, str]]], instance: str | None = None) -> list[str]:
    """The unit's ExecStart as argv, specifiers expanded (no quoting or $VARIABLES expected)."""
    line = one(unit, "Service", "ExecStart")
    assert not re.search(r"[\"'$\\]", line), f"ExecStart needs systemd's quoting or expansion rules: {line}"
    assert line[0] not in "-@:+!", f"ExecStart with a prefix: {line}"
    return shlex.split(expand(line, instance))


def seconds(span: str) -> float:
    """A systemd time span such as ``30s``, ``1min 30s`` or ``90`` (seconds), in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), f"not a time span: {span!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- the plugins -----------------------------------------------------------------------


def plugins() -> dict[str, ServiceMaker]:
    """The twistd commands of ``twisted/plugins/toystore_plugins.py``, by name."""
    makers = [value for value in vars(toystore_plugins).values() if isinstance(value, ServiceMaker)]
    return {maker.tapname: maker for maker in makers}


def deploy_cluster_file() -> str:
    """The five-host cluster file written out in ``docs/deploy.rst`` (its one TOML block)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^\.\. code-block:: toml\n\n((?:   .*\n|\n)+)", text, re.MULTILINE)
    assert len(blocks) == 1, f"{len(blocks)} TOML blocks in docs/deploy.rst"
    return "\n".join(line[3:] for line in blocks[0].splitlines()) + "\n"


def doc_exec_starts() -> list[str]:
    """The ExecStart= lines of the drop-ins that ``docs/deploy.rst`` shows."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(f"ExecStart={TWISTD} ")]


class UsesClusterFiles:
    """For test cases that run command lines against a cluster file."""

    def packaged_config(self) -> str:
        """A copy of the packaged (one-machine) cluster file; its path."""
        path = Path(self.mktemp())
        path.write_text(dump(read_raw(None)))
        return str(path)

    def deploy_config(self) -> str:
        """A copy of the five-host file of docs/deploy.rst, with the secret in the environment; its path."""
        path = Path(self.mktemp())
        path.write_text(deploy_cluster_file())
        self.set_secret(SECRET)
        return str(path)

    def set_secret(self, secret: str | None) -> None:
        """Set (or, for None, remove) TOYSTORE_SECRET for this test."""
        before = os.environ.get(SECRET_ENV)

        def restore() -> None:
            os.environ.pop(SECRET_ENV, None)
            if before is not None:
                os.environ[SECRET_ENV] = before

        self.addCleanup(restore)
        os.environ.pop(SECRET_ENV, None)
        if secret is not None:
            os.environ[SECRET_ENV] = secret

    def parse_command(self, argv: list[str], config: str) -> object:
        """
        Parse ``argv`` (twistd and everything after it) as twistd would, with
        ``--config`` pointing to ``config``: first the plugin's own options
        class (its flags, and the cluster file loaded), then twistd's whole
        command line.  The plugin's parsed options.
        """
        self.assertEqual(argv[0], TWISTD)
        names = plugins()
        plugin = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
        self.assertIn(plugin, names, f"{argv}: no toystore plugin named")
        at = argv.index(plugin)
        self.assertEqual(argv[1:at], ["--nodaemon", "--pidfile="])
        args = argv[at + 1 :]
        self.assertEqual(args[args.index("--config") + 1], CONFIG)
        args[args.index("--config") + 1] = config
        options = names[plugin].options()
        try:
            options.parseOptions(args)
        except SystemExit as e:
            self.fail(f"{plugin} refuses {args}: {e.code}")
        twistd = ServerOptions()
        try:
            twistd.parseOptions([*argv[1:at], plugin, *args])
        except SystemExit as e:
            self.fail(f"twistd refuses {argv}: {e.code}")
        self.assertEqual((twistd.subCommand, type(twistd.subOptions)), (plugin, type(options)))
        self.assertTrue(twistd["nodaemon"])
        self.assertEqual(twistd["pidfile"], "")
        return options


# -- the tests ------------------------------------------------------------------------


class UnitParserTests(SynchronousTestCase):
    """The parser reads systemd's syntax, not an INI file's."""

    def test_repeats_resets_continuations(self) -> None:
        """Repeated keys are kept in order; an empty value resets; a backslash continues the line."""
        unit = parse_unit(
            "# a comment\n[Unit]\nAfter=a.target\nAfter=b.target\n; another\n\n"
            "[Service]\nExecStart=/bin/echo one \\\n  # skipped\n  two\n"
            "Environment=A=1\nEnvironment=\nEnvironment=B=2\n"
        )
        self.assertEqual(values(unit, "Unit", "After"), ["a.target", "b.target"])
        self.assertEqual(one(unit, "Service", "ExecStart"), "/bin/echo one two")
        self.assertEqual(values(unit, "Service", "Environment"), ["B=2"])

    def test_bad_lines(self) -> None:
        """A line that is neither a section nor Key=Value is an error naming it."""
        for text, words in [
            ("[Unit]\nDescription\n", "line 2: not Key=Value"),
            ("After=x\n", "line 1: After= before any section"),
            ("[Unit\n", "line 1: not a section header"),
            ("[Unit]\n[Unit]\n", "line 2: section [Unit] again"),
        ]:
            with self.subTest(text=text):
                self.assertIn(words, str(self.assertRaises(ValueError, parse_unit, text)))

    def test_time_spans(self) -> None:
        """Time spans in systemd's units."""
        self.assertEqual([seconds(s) for s in ["30s", "90", "1min 30s", "2m", "500ms"]], [30, 90, 90, 120, 0.5])


class UnitFileTests(UsesClusterFiles, SynchronousTestCase):
    """Each shipped unit runs a toystore plugin as it must run under systemd."""

    def setUp(self) -> None:
        self.texts = unit_files()
        self.units = {name: parse_unit(text) for name, text in self.texts.items()}

    def test_the_package_ships_them(self) -> None:
        """The catalog's unit, the front-end's, and the replicas' template."""
        self.assertEqual(set(self.units), {CATALOG, FRONTEND, ORDER})

    def test_sections(self) -> None:
        """[Unit], [Service] and [Install], and no other."""
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                self.assertEqual(set(unit), {"Unit", "Service", "Install"})
                self.assertEqual(values(unit, "Install", "WantedBy"), ["multi-user.target"])

    def test_command_lines_parse(self) -> None:
        """
        ExecStart runs twistd in the foreground with a plugin of the dropin,
        and every option after it is one the plugin's options class takes
        (--config pointing to a copy of the packaged cluster file).
        """
        config = self.packaged_config()
        self.set_secret(None)
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                argv = exec_start(unit, "1" if name == ORDER else None)
                self.assertIn(PLUGIN[name], argv)
                self.parse_command(argv, config)

    def test_command_lines_parse_with_the_deploy_cluster_file(self) -> None:
        """The same with the five-host file of docs/deploy.rst and its secret, for every replica id."""
        config = self.deploy_config()
        ids = [str(r.id) for r in load(config).order.replicas]
        self.assertEqual(ids, ["1", "2", "3"])
        for name, unit in self.units.items():
            for instance in ids if name == ORDER else [None]:
                with self.subTest(unit=name, instance=instance):
                    options = self.parse_command(exec_start(unit, instance), config)
                    if name == ORDER:
                        self.assertEqual(options.me.id, int(instance))

    def test_the_order_unit_is_a_template(self) -> None:
        """toystore-order@N runs the replica with --id N, its data in a directory of its own."""
        argv = exec_start(self.units[ORDER], "2")
        self.assertEqual(argv[argv.index("--id") + 1], "2")
        self.assertEqual(argv[argv.index("--data-dir") + 1], "/var/lib/toystore/order-2")
        self.assertIn("--id %i", one(self.units[ORDER], "Service", "ExecStart"))

    def test_data_directories(self) -> None:
        """
        --data-dir is the unit's StateDirectory (which systemd makes, owned by
        the user) and is writable under ProtectSystem=strict; the front-end
        keeps no data.
        """
        for name in (CATALOG, ORDER):
            with self.subTest(unit=name):
                unit = self.units[name]
                argv = exec_start(unit, "3")
                data_dir = argv[argv.index("--data-dir") + 1]
                state = expand(one(unit, "Service", "StateDirectory"), "3")
                self.assertEqual(data_dir, f"/var/lib/{state}")
                self.assertIn(data_dir, [expand(v, "3") for v in values(unit, "Service", "ReadWritePaths")])
        self.assertNotIn("--data-dir", exec_start(self.units[FRONTEND]))
        self.assertEqual(values(self.units[FRONTEND], "Service", "StateDirectory"), [])

    def test_no_supervisor_flag(self) -> None:
        """--exit-on-stdin-close would stop a process at once: under systemd stdin is /dev/null."""
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                self.assertNotIn("--exit-on-stdin-close", exec_start(unit, "1"))

    def test_user_and_secret(self) -> None:
        """The user toystore; the secret from the optional environment file; the cluster file in /etc."""
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                self.assertEqual(one(unit, "Service", "User"), "toystore")
                self.assertEqual(one(unit, "Service", "Group"), "toystore")
                self.assertEqual(values(unit, "Service", "EnvironmentFile"), [SECRET_FILE])
                argv = exec_start(unit, "1")
                self.assertEqual(argv[argv.index("--config") + 1], CONFIG)

    def test_restart_and_stop(self) -> None:
        """
        Restarted on failure; stopped by SIGTERM with time for a leader's
        handover (at most order.election_timeout) and the writes that follow
        before systemd resorts to SIGKILL.
        """
        cluster = load(self.deploy_config())
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                self.assertEqual(one(unit, "Service", "Restart"), "on-failure")
                self.assertIn(values(unit, "Service", "KillSignal"), ([], ["SIGTERM"]))
                timeout = seconds(one(unit, "Service", "TimeoutStopSec"))
                self.assertGreater(timeout, cluster.order.election_timeout + cluster.wire.call_timeout)

    def test_network_and_hardening(self) -> None:
        """After the network is online (listeners bind to the host's address); hardened."""
        for name, unit in self.units.items():
            with self.subTest(unit=name):
                self.assertIn("network-online.target", values(unit, "Unit", "After"))
                self.assertIn("network-online.target", values(unit, "Unit", "Wants"))
                for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")]:
                    self.assertEqual(one(unit, "Service", key), value)

    def test_the_docs_name_the_same_paths(self) -> None:
        """docs/deploy.rst documents the virtualenv, cluster file and secret file the units assume."""
        text = DEPLOY_DOC.read_text(encoding="utf-8")
        for path in (TWISTD, CONFIG, SECRET_FILE.lstrip("-"), "/opt/toystore/venv"):
            self.assertIn(path, text)


class DeployClusterFileTests(UsesClusterFiles, SynchronousTestCase):
    """The five-host cluster file of docs/deploy.rst, and the drop-ins it shows."""

    def test_needs_the_secret(self) -> None:
        """Without a secret it is refused (its lines ports are off loopback); with one it loads."""
        path = self.deploy_config()
        self.set_secret(None)
        error = self.assertRaises(ConfigError, load, path)
        self.assertIn("catalog.lines listens beyond loopback", str(error))
        self.assertIn(str(error), DEPLOY_DOC.read_text(encoding="utf-8"), "the doc quotes the error")
        self.set_secret(SECRET)
        self.assertEqual(load(path).wire.secret, SECRET)
        self.assertEqual(read_raw(path)["wire"]["secret"], "", "the secret stays out of the file")

    def test_hosts(self) -> None:
        """
        Every listener binds to a documentation address of its own host, and
        the connect string of each lines port names that same address.
        """
        cluster = load(self.deploy_config())
        lines = [(cluster.catalog.lines, cluster.catalog.connect, cluster.catalog.http)]
        lines += [(r.lines, r.connect, r.http) for r in cluster.order.replicas]
        hosts = set()
        for listen, connect, http in lines:
            with self.subTest(listen=listen):
                host = re.fullmatch(r"tcp:\d+:interface=(192\.0\.2\.\d+)", listen).group(1)
                self.assertEqual(re.fullmatch(r"tcp:\d+:interface=(192\.0\.2\.\d+)", http).group(1), host)
                port = listen.split(":")[1]
                self.assertEqual(connect, f"tcp:host={host}:port={port}")
                self.assertFalse(is_loopback(listen))
                hosts.add(host)
        frontend = re.fullmatch(r"tcp:(\d+):interface=(192\.0\.2\.\d+)", cluster.frontend.http)
        self.assertEqual(cluster.frontend.url, f"http://{frontend.group(2)}:{frontend.group(1)}")
        hosts.add(frontend.group(2))
        self.assertEqual(len(hosts), 5, "five hosts")

    def test_data_directories_are_the_units(self) -> None:
        """The file's data directories are those the units give with --data-dir."""
        cluster = load(self.deploy_config())
        units = {name: parse_unit(text) for name, text in unit_files().items()}
        catalog = exec_start(units[CATALOG])
        self.assertEqual(cluster.catalog.data_dir, catalog[catalog.index("--data-dir") + 1])
        order = exec_start(units[ORDER], "{id}")
        self.assertEqual(cluster.order.data_dir, order[order.index("--data-dir") + 1])

    def test_drop_ins_parse(self) -> None:
        """The ExecStart= lines of the doc's drop-ins (a second front-end, a replacement replica) parse."""
        starts = doc_exec_starts()
        self.assertEqual(len(starts), 2)
        config = self.deploy_config()
        for line in starts:
            with self.subTest(line=line):
                argv = shlex.split(expand(line.removeprefix("ExecStart="), "2"))
                options = self.parse_command(argv, config)
                if "toystore-order" in argv:
                    self.assertTrue(options["replaces"])
                else:
                    self.assertEqual(options.config.frontend.http, "tcp:8000:interface=192.0.2.11")


# -- systemd-analyze verify ----------------------------------------------------------------------

#: What verify may say about a unit that is no fault of its text.
BENIGN = re.compile(r"Command .* is not executable")


def verify(path: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify`` of one unit file: its exit status and its output lines."""
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path.resolve())], capture_output=True, text=True, timeout=120
    )
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def complaints(output: list[str], names: list[str]) -> list[str]:
    """
    The lines of verify's output about the units ``names`` (file names):
    the parser's (``<file>:<line>: Unknown key ...``, ``Unknown section
    ...``, ``Failed to parse ...``) and its verdicts (``<unit>: ... has a
    bad unit file setting``), less the benign ones (:data:`BENIGN`).  Lines
    about other units of the host are not ours to judge.
    """
    stems = [name.removesuffix(".service") for name in names]
    ours = [line for line in output if any(stem in line for stem in stems)]
    return [line for line in ours if not BENIGN.search(line)]


class SystemdAnalyzeTests(SynchronousTestCase):
    """
    ``systemd-analyze verify`` accepts every unit.  Verify also checks that
    ExecStart's program exists, and /opt/toystore/venv is not here: the units
    are verified in copies whose ExecStart runs this virtualenv's twistd, so
    that what is left to fail is the units' own text.
    """

    def setUp(self) -> None:
        if shutil.which("systemd-analyze") is None:
            raise SkipTest("systemd-analyze is not installed: the units are checked by the parser above only")
        self.twistd = Path(sys.executable).with_name("twistd")
        if not self.twistd.exists():
            raise SkipTest(f"no twistd beside {sys.executable} to stand in for {TWISTD}")
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        probe = self.directory / "toystore-probe.service"
        probe.write_text(f"[Unit]\nDescription=probe\n\n[Service]\nExecStart={self.twistd} --version\n")
        status, output = verify(probe)
        probe.unlink()
        if status != 0 or complaints(output, [probe.name]):
            raise SkipTest(f"systemd-analyze verify does not work here: status {status}: {' | '.join(output)}")

    def copy(self, name: str, text: str) -> Path:
        """The unit ``name`` in the test's directory, running this virtualenv's twistd."""
        self.assertIn(f"ExecStart={TWISTD} ", text)
        path = self.directory / name
        path.write_text(text.replace(f"ExecStart={TWISTD} ", f"ExecStart={self.twistd} "))
        return path

    def test_units_verify(self) -> None:
        """No complaint about any unit, the template verified as replica 1's and replica 3's instance."""
        for name, text in unit_files().items():
            path = self.copy(name, text)
            targets = [path.with_name(name.replace("@", f"@{i}")) for i in (1, 3)] if "@." in name else [path]
            for target in targets:
                with self.subTest(unit=target.name):
                    status, output = verify(target)
                    found = complaints(output, [name, target.name])
                    self.assertEqual(found, [], f"systemd-analyze verify {target.name}: status {status}")

    def test_a_bad_setting_is_caught(self) -> None:
        """The check has teeth: a misspelt key, a bad value and a misspelt section are each reported."""
        text = unit_files()[CATALOG]
        broken = (
            text.replace("Restart=on-failure", "Restrat=on-failure")
            .replace("ProtectSystem=strict", "ProtectSystem=strcit")
            .replace("[Install]", "[Instal]")
        )
        path = self.copy(CATALOG, broken)
        _, output = verify(path)
        found = complaints(output, [CATALOG])
        for words in ("Restrat", "strcit", "Instal"):
            self.assertTrue(any(words in line for line in found), f"{words!r} not reported: {output}")
