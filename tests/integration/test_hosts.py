"""
Hosts on one machine and the packet faults between them
(:mod:`toystore.hosts`), on real network namespaces: hosts reach each other
over TCP and nothing is added to the machine's own network; each fault
drops (a connection attempt times out, where without it a closed port
refuses at once) exactly what it names, and heal restores it; what a
crashed run left is cleaned away.

Every listener and connector is a small Python child run inside its host
under the hosts' ``wrap`` prefix; a listener prints ``ready`` once it
listens, and nobody waits a fixed time.  The hosts' prefix is this run's
own, so no test touches another run's hosts.  The whole module is skipped,
with the reason, where hosts cannot be made.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from toystore.config import load
from toystore.hosts import Hosts, PacketFaults, clean, unavailable
from toystore.hosts.network import NETNS_DIR
from toystore.hosts.up import NAMES
from toystore.testing.store import child_env

pytestmark = pytest.mark.integration

#: The two ports every host listens on.
PORT, OTHER_PORT = 7001, 7002
#: A port nobody listens on: connecting to it is refused, unless a fault drops the attempt.
CLOSED_PORT = 7009
#: How long a connection attempt may take before it counts as dropped; a refusal comes at once.
CONNECT_TIMEOUT = 1.0

LISTENER = """
import selectors, socket, sys
servers = []
for port in map(int, sys.argv[2:]):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[1], port))
    server.listen(16)
    servers.append(server)
print("ready", flush=True)
chooser = selectors.DefaultSelector()
for server in servers:
    chooser.register(server, selectors.EVENT_READ)
while True:
    for key, _ in chooser.select():
        connection, _ = key.fileobj.accept()
        connection.sendall(b"ok")
        connection.close()
"""

CONNECTOR = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        print("connected" if s.recv(2) == b"ok" else "no reply")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(type(e).__name__, e)
"""

CRASHER = """
import sys, time
from toystore.hosts import Hosts, PacketFaults
hosts = Hosts(["x", "y"], prefix=sys.argv[1])
hosts.create()
PacketFaults(hosts).cut("x", "y")
print("made", flush=True)
time.sleep(60)
"""


def own_prefix() -> str:
    """A prefix of this run's own: ``tst-`` and four random characters, then ``-``."""
    return f"tst-{secrets.token_hex(2)}-"


def interfaces() -> set[str]:
    """The interfaces of this process's namespace (the machine's own)."""
    return {name for _, name in socket.if_nameindex()}


def namespaces(prefix: str) -> list[str]:
    """The named network namespaces that start with ``prefix``."""
    return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)) if os.path.isdir(NETNS_DIR) else []


def python(hosts: Hosts, host: str, source: str, *args: str) -> list[str]:
    """The command line that runs ``source`` with ``args`` in a child Python inside ``host``."""
    return [*hosts.wrap(host), sys.executable, "-c", source, *args]


def wait_for_line(process: subprocess.Popen[bytes], expected: str, timeout: float = 10.0) -> None:
    """Read ``process``'s output until the line ``expected``; fail if it exits or takes over ``timeout`` s."""
    deadline, output = time.monotonic() + timeout, b""
    while expected.encode() not in output.splitlines():
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {expected!r} from the child in {timeout} s; it printed:\n{output.decode()}")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            pytest.fail(f"the child exited ({process.wait()}) before {expected!r}; it printed:\n{output.decode()}")
        output += chunk


def attempt(hosts: Hosts, source: str, target: str, port: int = PORT) -> str:
    """
    A TCP connection from host ``source`` to ``target``'s ``port``:
    ``connected`` (and a reply came), ``timeout`` (dropped) or ``refused``.
    """
    command = python(hosts, source, CONNECTOR, hosts.address(target), str(port), str(CONNECT_TIMEOUT))
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, env={**os.environ, **child_env()})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def made() -> Iterator[tuple[Hosts, set[str]]]:
    """Hosts a, b and c, each listening on two ports; and the machine's own interfaces before they were made."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"hosts cannot be made here: {reason}")
    before = interfaces()
    hosts = Hosts(["a", "b", "c"], prefix=own_prefix())
    listeners: list[subprocess.Popen[bytes]] = []
    try:
        hosts.create()
        for host in hosts.names:
            command = python(hosts, host, LISTENER, hosts.address(host), str(PORT), str(OTHER_PORT))
            listeners.append(subprocess.Popen(command, stdout=subprocess.PIPE))
            wait_for_line(listeners[-1], "ready")
        yield hosts, before
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()
        hosts.remove()


@pytest.fixture
def hosts(made: tuple[Hosts, set[str]]) -> Hosts:
    """The module's hosts."""
    return made[0]


@pytest.fixture
def faults(hosts: Hosts) -> Iterator[PacketFaults]:
    """Packet faults between the hosts, healed after the test whatever it did."""
    added = PacketFaults(hosts)
    try:
        yield added
    finally:
        added.heal()


def test_hosts_reach_each_other(made: tuple[Hosts, set[str]]) -> None:
    """
    Every host connects to every other over TCP at its own address; the
    machine's own namespace has no new interface; each host has the
    addresses in order and no default route.
    """
    hosts, before = made
    assert [hosts.address(name) for name in hosts.names] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    for source in hosts.names:
        for target in hosts.names:
            if source != target:
                assert attempt(hosts, source, target) == "connected", (source, target)
    assert interfaces() == before
    routes = subprocess.run([*hosts.wrap("a"), "ip", "route"], capture_output=True, text=True, check=True).stdout
    assert "default" not in routes and "198.18.0.0/24" in routes


def test_enter_moves_the_process_into_a_host(hosts: Hosts) -> None:
    """A process that enters host b (not run under wrap) reaches a at a's address, from b's address."""
    source = f"""
import socket
from toystore.hosts import Hosts
hosts = Hosts({hosts.names!r}, prefix={hosts.prefix!r})
hosts.enter("b")
with socket.create_connection((hosts.address("a"), {PORT}), timeout=2) as s:
    print(s.getsockname()[0], s.recv(2).decode())
"""
    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=10, env={**os.environ, **child_env()}
    )
    assert result.stdout.split() == [hosts.address("b"), "ok"], result.stderr


def test_cut_drops_both_ways_until_healed(hosts: Hosts, faults: PacketFaults) -> None:
    """
    A cut between a and b makes connection attempts either way time out,
    even to a port that would refuse (a drop, not a reset); a still
    reaches c, and c reaches b; heal restores a to b.
    """
    assert attempt(hosts, "a", "b", CLOSED_PORT) == "refused"
    faults.cut("a", "b")
    assert "drop" in faults.rules("a") and "drop" in faults.rules("b")
    assert attempt(hosts, "a", "b") == "timeout"
    assert attempt(hosts, "b", "a") == "timeout"
    assert attempt(hosts, "a", "b", CLOSED_PORT) == "timeout"
    assert attempt(hosts, "a", "c") == "connected"
    assert attempt(hosts, "c", "b") == "connected"
    faults.heal()
    assert faults.rules("a") == faults.rules("b") == ""
    assert attempt(hosts, "a", "b") == "connected"


def test_block_is_one_sided_and_port_scoped(hosts: Hosts, faults: PacketFaults) -> None:
    """
    Blocking b's port from a drops a's attempts to that port only: a still
    reaches b's other port, c still reaches the blocked one, b still
    reaches a; heal restores it.
    """
    faults.block("b", PORT, ["a"])
    assert attempt(hosts, "a", "b", PORT) == "timeout"
    assert attempt(hosts, "a", "b", OTHER_PORT) == "connected"
    assert attempt(hosts, "c", "b", PORT) == "connected"
    assert attempt(hosts, "b", "a", PORT) == "connected"
    faults.heal()
    assert attempt(hosts, "a", "b", PORT) == "connected"


def test_isolate_cuts_a_host_from_every_other(hosts: Hosts, faults: PacketFaults) -> None:
    """An isolated host neither reaches nor is reached by any other, which still reach each other."""
    faults.isolate("c")
    assert attempt(hosts, "a", "c") == "timeout"
    assert attempt(hosts, "c", "b") == "timeout"
    assert attempt(hosts, "a", "b") == "connected"
    faults.heal()
    assert attempt(hosts, "c", "b") == "connected"


def test_loss_drops_its_share_until_healed(hosts: Hosts, faults: PacketFaults) -> None:
    """
    Loss of 100% on b's link drops everything to b; a smaller share is a
    random rule on both directions of the link; heal restores b and
    removes every rule.
    """
    faults.loss("b", 100)
    faults.loss("c", 30)
    assert attempt(hosts, "a", "b") == "timeout"
    assert f'iifname "{hosts.interface("b")}" drop' in faults.rules("b")
    rules = faults.rules("c")
    assert rules.count("numgen random mod 100 < 30 drop") == 2, rules
    assert f'iifname "{hosts.interface("c")}"' in rules and f'oifname "{hosts.interface("c")}"' in rules
    faults.heal()
    assert faults.rules("b") == faults.rules("c") == ""
    assert attempt(hosts, "a", "b") == "connected"


def test_clean_removes_what_a_crashed_run_left(made: tuple[Hosts, set[str]]) -> None:
    """
    Hosts made (with a cut between them) by a process that is then
    SIGKILLed stay behind; clean with their prefix removes every namespace,
    and afterwards no namespace, interface or nft table of that prefix is
    left, while the module's own hosts are untouched.
    """
    hosts, before = made
    prefix = own_prefix()
    crashed = subprocess.Popen(
        [sys.executable, "-c", CRASHER, prefix], stdout=subprocess.PIPE, env={**os.environ, **child_env()}
    )
    try:
        wait_for_line(crashed, "made")
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
    left = namespaces(prefix)
    assert left == sorted([f"{prefix}net", f"{prefix}x", f"{prefix}y"])
    try:
        removed = clean(prefix)
    finally:
        clean(prefix)  # even if the assertions below fail, nothing of it stays
    assert removed == [f"namespace {name}" for name in left]
    assert namespaces(prefix) == []
    assert interfaces() == before
    for namespace in os.listdir(NETNS_DIR):
        links = subprocess.run(["ip", "-n", namespace, "-o", "link"], capture_output=True, text=True).stdout
        assert f" {prefix}" not in links, (namespace, links)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "toystore" not in tables
    assert hosts.exists()


def test_up_runs_the_store_on_hosts_and_removes_them(made: tuple[Hosts, set[str]], tmp_path: Path) -> None:
    """
    ``python -m toystore.hosts up`` starts the store on hosts of its own,
    every listener on its host's address and a 32-character secret set;
    the front-end answers from the clients' host; SIGTERM stops it and
    removes every namespace it made.
    """
    prefix = own_prefix()
    up = subprocess.Popen(
        [sys.executable, "-m", "toystore.hosts", "up", "--dir", str(tmp_path), "--prefix", prefix],
        stdout=subprocess.PIPE,
        env={**os.environ, **child_env()},
    )
    try:
        wait_for_line(up, "Ctrl-C stops it and removes the hosts.", timeout=60.0)
        ours = Hosts(NAMES, prefix)
        config = load(str(tmp_path / "cluster.toml"))
        assert len(config.wire.secret) == 32
        assert config.catalog.lines == f"tcp:8101:interface={ours.address('catalog')}"
        url = f"http://{ours.address('frontend')}:8000/products/Tux"
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        reply = subprocess.run([*ours.wrap("clients"), sys.executable, "-c", fetch], capture_output=True, text=True)
        assert json.loads(reply.stdout)["data"]["name"] == "Tux", reply.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        status = up.wait(timeout=30)
        clean(prefix)
    assert status == 0
    assert namespaces(prefix) == []
