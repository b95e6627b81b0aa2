"""Tests for the cluster file and the shared command line of :mod:`toystore.config`."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.tap import Options as CatalogOptions
from toystore.config import ConfigError, dump, is_loopback, load, read_raw
from toystore.order.log import WINDOW_BYTES
from toystore.order.tap import Options as OrderOptions


def dump_toml(raw: dict, path: Path) -> None:
    """Write ``raw`` as a cluster file at ``path``."""
    path.write_text(dump(raw))


class WritesConfig:
    """For test cases that load the packaged cluster file with one change."""

    def write(self, mutate) -> str:
        """The packaged cluster file, changed by ``mutate(raw)``, written to a new path; the path."""
        raw = read_raw(None)
        mutate(raw)
        path = Path(self.mktemp())
        dump_toml(raw, path)
        return str(path)


class DefaultConfigTests(SynchronousTestCase):
    """The packaged cluster file describes the one-machine store."""

    def test_ports(self) -> None:
        """Ports are those of the design, all bound to 127.0.0.1."""
        cluster = load()
        self.assertEqual(cluster.catalog.lines, "tcp:8101:interface=127.0.0.1")
        self.assertEqual(cluster.catalog.http, "tcp:8100:interface=127.0.0.1")
        self.assertEqual(cluster.frontend.http, "tcp:8000:interface=127.0.0.1")
        self.assertEqual(
            [(r.id, r.lines, r.http) for r in cluster.order.replicas],
            [(i, f"tcp:{8300 + i}:interface=127.0.0.1", f"tcp:{8200 + i}:interface=127.0.0.1") for i in (1, 2, 3)],
        )

    def test_knobs(self) -> None:
        """Restock every 10 s to 100; numbers are of the right type."""
        cluster = load()
        self.assertEqual(cluster.catalog.restock_interval, 10.0)
        self.assertIsInstance(cluster.catalog.restock_interval, float)
        self.assertEqual(cluster.catalog.restock_quantity, 100)
        self.assertEqual(cluster.catalog.initial_stock, 100)

    def test_http_timeouts(self) -> None:
        """A request must arrive within 10 s of its first byte; idle connections close after 60 s."""
        frontend = load().frontend
        self.assertEqual((frontend.request_timeout, frontend.idle_timeout), (10.0, 60.0))


class LoadErrorTests(WritesConfig, SynchronousTestCase):
    """A bad value is reported in one line that names it."""

    def assertProblem(self, mutate, words: str) -> None:
        error = self.assertRaises(ConfigError, load, self.write(mutate))
        self.assertIn(words, str(error))
        self.assertNotIn("\n", str(error))

    def test_rewritten_default_loads(self) -> None:
        """The test's TOML writer round-trips the default (so the cases below test one change each)."""
        self.assertEqual(load(self.write(lambda raw: None)), load())

    def test_unknown_key(self) -> None:
        """A misspelt key is named, not ignored."""
        self.assertProblem(
            lambda raw: raw["catalog"].update(restock_intervall=3), "catalog.restock_intervall is not a known setting"
        )

    def test_missing_key(self) -> None:
        """A key left out is named."""
        self.assertProblem(lambda raw: raw["catalog"].pop("data_dir"), "catalog.data_dir is missing")

    def test_wrong_type(self) -> None:
        """A string where a number belongs is named with its value."""
        self.assertProblem(
            lambda raw: raw["catalog"].update(restock_quantity="100"), "catalog.restock_quantity must be an integer"
        )

    def test_bool_is_not_an_integer(self) -> None:
        """TOML true is not accepted as a count."""
        self.assertProblem(
            lambda raw: raw["catalog"].update(initial_stock=True), "catalog.initial_stock must be an integer"
        )

    def test_out_of_range(self) -> None:
        """Checks run on values: an interval must be positive."""
        self.assertProblem(
            lambda raw: raw["catalog"].update(restock_interval=0), "catalog.restock_interval must be > 0"
        )

    def test_bad_endpoints(self) -> None:
        """Endpoint strings are parsed at load time, listen and connect alike."""
        self.assertProblem(
            lambda raw: raw["catalog"].update(lines="tcpx:8101"), "catalog.lines is not a listening endpoint"
        )
        self.assertProblem(
            lambda raw: raw["catalog"].update(connect="tcp:host=x"), "catalog.connect is not a client endpoint"
        )

    def test_optional_setting(self) -> None:
        """peer_connect may be left out (the replica's connect) or given, and is checked when given."""
        cluster = load(self.write(lambda raw: raw["order"]["replicas"][0].update(peer_connect="tcp:host=h:port=9")))
        self.assertEqual(cluster.order.replica(1).peer_address, "tcp:host=h:port=9")
        self.assertEqual(cluster.order.replica(2).peer_address, cluster.order.replica(2).connect)
        self.assertProblem(
            lambda raw: raw["order"]["replicas"][0].update(peer_connect="tcp:port"),
            "order.replicas[0].peer_connect is not a client endpoint",
        )

    def test_http_timeouts_are_optional(self) -> None:
        """A cluster file without the HTTP timeouts loads with their defaults; given, they are checked."""
        cluster = load(self.write(lambda raw: [raw["frontend"].pop(k) for k in ("request_timeout", "idle_timeout")]))
        self.assertEqual((cluster.frontend.request_timeout, cluster.frontend.idle_timeout), (10.0, 60.0))
        self.assertProblem(
            lambda raw: raw["frontend"].update(request_timeout=0), "frontend.request_timeout must be > 0"
        )

    def test_log_window(self) -> None:
        """
        order.window_bytes defaults to the log's own default (4 MiB) when left
        out; given, it must be an integer, 0 or more.
        """
        self.assertEqual(load().order.window_bytes, WINDOW_BYTES)
        self.assertEqual(WINDOW_BYTES, 4 << 20)
        cluster = load(self.write(lambda raw: raw["order"].pop("window_bytes")))
        self.assertEqual(cluster.order.window_bytes, WINDOW_BYTES)
        cluster = load(self.write(lambda raw: raw["order"].update(window_bytes=65536)))
        self.assertEqual(cluster.order.window_bytes, 65536)
        self.assertProblem(lambda raw: raw["order"].update(window_bytes=-1), "order.window_bytes must be >= 0, not -1")
        self.assertProblem(
            lambda raw: raw["order"].update(window_bytes="4MiB"), "order.window_bytes must be an integer"
        )

    def test_replica_problems(self) -> None:
        """Replica entries are checked one by one, and ids must differ."""
        self.assertProblem(
            lambda raw: raw["order"]["replicas"][1].update(http=8), "order.replicas[1].http must be a string"
        )
        self.assertProblem(lambda raw: raw["order"]["replicas"][2].update(id=1), "ids must be unique")

    def test_not_toml(self) -> None:
        """A file that is not TOML says so, with the parser's position."""
        path = Path(self.mktemp())
        path.write_text("[catalog\n")
        self.assertIn("is not valid TOML", str(self.assertRaises(ConfigError, load, str(path))))

    def test_missing_file(self) -> None:
        """A missing file is named."""
        error = self.assertRaises(ConfigError, load, "/nonexistent/cluster.toml")
        self.assertIn("cannot read config /nonexistent/cluster.toml", str(error))


class OptionsTests(SynchronousTestCase):
    """Plugin options: --config plus flags that override single values."""

    def test_defaults(self) -> None:
        """Without flags the options carry the packaged config."""
        options = CatalogOptions()
        options.parseOptions([])
        self.assertEqual(options.config, load())

    def test_overrides(self) -> None:
        """Flags replace single values and are converted to their types."""
        options = CatalogOptions()
        options.parseOptions(["--data-dir", "/tmp/x", "--restock-interval=2.5", "--lines", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options.config.catalog.data_dir, "/tmp/x")
        self.assertEqual(options.config.catalog.restock_interval, 2.5)
        self.assertEqual(options.config.catalog.lines, "tcp:0:interface=127.0.0.1")
        self.assertEqual(options.config.catalog.http, load().catalog.http)

    def test_config_file_then_flag(self) -> None:
        """A flag wins over the file named by --config."""
        raw = read_raw(None)
        raw["catalog"]["restock_quantity"] = 7
        raw["catalog"]["initial_stock"] = 9
        path = Path(self.mktemp())
        dump_toml(raw, path)
        options = CatalogOptions()
        options.parseOptions(["--config", str(path), "--initial-stock", "3"])
        self.assertEqual((options.config.catalog.restock_quantity, options.config.catalog.initial_stock), (7, 3))

    def test_errors_exit_with_one_line(self) -> None:
        """Bad flags and bad values end the process with one line naming the problem."""
        cases = {
            ("--restock-interval", "soon"): "--restock-interval must be a number, not 'soon'",
            ("--initial-stock", "1.5"): "--initial-stock must be an integer",
            ("--restock-interval", "-1"): "catalog.restock_interval must be > 0",
            ("--bogus",): "option --bogus not recognized",
            ("--config", "/nonexistent.toml"): "cannot read config /nonexistent.toml",
            ("--http", "nonsense"): "catalog.http is not a listening endpoint",
        }
        for argv, words in cases.items():
            with self.subTest(argv=argv):
                error = self.assertRaises(SystemExit, CatalogOptions().parseOptions, list(argv))
                message = str(error.code)
                self.assertTrue(message.startswith("toystore-catalog: error: "), message)
                self.assertIn(words, message)
                self.assertNotIn("\n", message)


SECRET = "a-cluster-secret-for-tests"


class InternalPortTests(WritesConfig, SynchronousTestCase):
    """The lines ports may listen beyond loopback only when a cluster secret makes their connections authenticate."""

    def test_loopback(self) -> None:
        """127.0.0.0/8, ::1, localhost and UNIX sockets are loopback; no interface means every interface."""
        local = ["tcp:8101:interface=127.0.0.1", "tcp:8101:interface=127.0.0.2", r"tcp6:8101:interface=\:\:1"]
        local += ["tcp:port=8101:interface=localhost", "unix:/tmp/lines.sock"]
        remote = ["tcp:8101", "tcp:8101:interface=0.0.0.0", "tcp6:8101", "tcp:8101:interface=10.0.0.5"]
        remote += ["tcp:8101:interface=example.com"]
        self.assertEqual([e for e in local if not is_loopback(e)], [])
        self.assertEqual([e for e in remote if is_loopback(e)], [])

    def test_refused_without_secret(self) -> None:
        """A lines port bound beyond loopback without a secret stops the load, in one line naming it."""
        cases = {
            "catalog.lines": lambda raw: raw["catalog"].update(lines="tcp:8101:interface=0.0.0.0"),
            "order.replicas[1].lines": lambda raw: raw["order"]["replicas"][1].update(lines="tcp:8302"),
        }
        for setting, mutate in cases.items():
            with self.subTest(setting=setting):
                error = self.assertRaises(ConfigError, load, self.write(mutate), environ={})
                self.assertTrue(str(error).startswith(f"{setting} listens beyond loopback"), str(error))
                self.assertIn("wire.secret", str(error))
                self.assertNotIn("\n", str(error))

    def test_accepted_with_secret(self) -> None:
        """With a secret, in the file or in TOYSTORE_SECRET, the same ports load."""

        def open_ports(raw: dict) -> None:
            raw["catalog"]["lines"] = "tcp:8101:interface=0.0.0.0"
            raw["order"]["replicas"][0]["lines"] = "tcp:8301"

        in_file = load(self.write(lambda raw: [open_ports(raw), raw["wire"].update(secret=SECRET)]), environ={})
        self.assertEqual((in_file.catalog.lines, in_file.wire.secret), ("tcp:8101:interface=0.0.0.0", SECRET))
        from_env = load(self.write(open_ports), environ={"TOYSTORE_SECRET": SECRET})
        self.assertEqual(from_env.wire.secret, SECRET)

    def test_secret_defaults(self) -> None:
        """No secret by default; the environment's replaces the file's; an empty variable changes nothing."""
        self.assertEqual(load(environ={}).wire.secret, "")
        self.assertEqual(load(environ={"TOYSTORE_SECRET": ""}).wire.secret, "")
        path = self.write(lambda raw: raw["wire"].update(secret=SECRET))
        self.assertEqual(load(path, environ={"TOYSTORE_SECRET": "x" * 20}).wire.secret, "x" * 20)

    def test_weak_secret_refused_without_showing_it(self) -> None:
        """A short secret is refused; no message and no repr shows a secret."""
        for where in ("file", "env"):
            with self.subTest(where=where):
                if where == "file":
                    args = (self.write(lambda raw: raw["wire"].update(secret="short-one")),)
                    environ = {}
                else:
                    args, environ = (), {"TOYSTORE_SECRET": "short-one"}
                error = self.assertRaises(ConfigError, load, *args, environ=environ)
                self.assertEqual(str(error), "wire.secret must be at least 16 printable characters")
        config = load(self.write(lambda raw: raw["wire"].update(secret=SECRET)), environ={})
        self.assertNotIn(SECRET, repr(config))

    def test_replica_lines_flag(self) -> None:
        """toystore-order --lines is checked the same way."""
        error = self.assertRaises(SystemExit, OrderOptions().parseOptions, ["--id", "1", "--lines", "tcp:8301"])
        self.assertIn("--lines listens beyond loopback", str(error.code))
        options = OrderOptions()
        options.parseOptions(["--id", "1", "--lines", "tcp:8301:interface=127.0.0.1"])
        self.assertEqual(options.me.id, 1)
