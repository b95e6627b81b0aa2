"""
The cluster file: every address and knob of the store, in one TOML file.

The package ships the one-machine default (``toystore/cluster.toml``); every
plugin reads it, or the file named by ``--config``, and lets flags override
single values.  Loading checks every value and reports the first problem as
one line that names it (``catalog.restock_interval must be > 0``), so that a
mistake in the file never shows up later as a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

DEFAULT_CONFIG = "cluster.toml"

#: The environment variable that, when set, gives the cluster secret (``wire.secret``).
SECRET_ENV = "TOYSTORE_SECRET"

#: The shortest cluster secret accepted.
SECRET_MIN_LENGTH = 16


class ConfigError(Exception):
    """The cluster file, or a flag, holds a value that cannot be used."""


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be >= 1"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _listen(value: str) -> str | None:
    """Check a server endpoint string without binding anything."""
    try:
        serverFromString(None, value)
    except (ValueError, TypeError, KeyError) as e:
        return f"is not a listening endpoint ({e})"
    return None


def _connect(value: str) -> str | None:
    """Check a client endpoint string without connecting anywhere."""
    try:
        clientFromString(None, value)
    except (ValueError, TypeError, KeyError) as e:
        return f"is not a client endpoint ({e})"
    return None


def _url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


def _knob(check: Callable[[Any], str | None] | None = None, **kwargs: Any) -> Any:
    """A config field whose values ``check`` approves (it returns a complaint)."""
    return field(metadata={"check": check}, **kwargs)


@dataclass(frozen=True)
class WireConfig:
    """Knobs of the internal JSON-lines connections."""

    call_timeout: float = _knob(_positive)
    max_line: int = _knob(_at_least_one)
    reconnect_initial: float = _knob(_positive)
    reconnect_max: float = _knob(_positive)
    #: seconds a connection attempt may take before it counts as failed (and
    #: is retried with backoff); without it a peer whose SYNs are dropped
    #: holds an attempt for Twisted's default of 30 s
    connect_timeout: float = _knob(_positive, default=2.0)
    #: seconds between the idle watch's looks at a connection: at each, the
    #: connecting side sends a ``ping`` if since the last it sent or heard nothing
    keepalive: float = _knob(_positive, default=1.0)
    #: a connection that hears nothing this long is closed, by either side
    #: (a half-open one, whose peer is gone); must be > keepalive
    idle_timeout: float = _knob(_positive, default=5.0)
    #: the cluster secret: when set, every connection to a lines port must
    #: first send it (an ``auth`` call); empty: no authentication, and the
    #: lines ports must listen on loopback only.  Checked in _check_cluster,
    #: so that no message ever shows it; kept out of repr for the same reason.
    secret: str = _knob(default="", repr=False)


@dataclass(frozen=True)
class CatalogConfig:
    """Where the catalog listens and keeps its data, and how it restocks."""

    lines: str = _knob(_listen)
    connect: str = _knob(_connect)
    http: str = _knob(_listen)
    data_dir: str = _knob()
    initial_stock: int = _knob(_not_negative)
    restock_interval: float = _knob(_positive)
    restock_quantity: int = _knob(_at_least_one)
    stall_timeout: float = _knob(_positive)


@dataclass(frozen=True)
class FrontendConfig:
    """Where the public front-end listens, the URL that reaches it, and its knobs."""

    http: str = _knob(_listen)
    url: str = _knob(_url)
    cache_size: int = _knob(_not_negative)
    max_quantity: int = _knob(_at_least_one)
    max_body: int = _knob(_at_least_one)
    failover_deadline: float = _knob(_positive)
    status_timeout: float = _knob(_positive)
    #: seconds a request (headers and body) may take to arrive after its
    #: first byte; every HTTP port, the operator ports too, uses this
    request_timeout: float = _knob(_positive, default=10.0)
    #: seconds a keep-alive connection may sit idle between requests
    idle_timeout: float = _knob(_positive, default=60.0)


@dataclass(frozen=True)
class ReplicaConfig:
    """One order replica's addresses."""

    id: int = _knob(_at_least_one)
    lines: str = _knob(_listen)
    connect: str = _knob(_connect)
    http: str = _knob(_listen)
    #: how the other replicas reach this one (a separate replication network,
    #: or a proxy in front of it in the fault tests); empty: ``connect``
    peer_connect: str = _knob(lambda value: value and _connect(value), default="")

    @property
    def peer_address(self) -> str:
        """The endpoint the other replicas connect to."""
        return self.peer_connect or self.connect


def _has_id(value: str) -> str | None:
    return None if "{id}" in value else "must contain {id}"


@dataclass(frozen=True)
class OrderConfig:
    """The order replicas and the knobs of replication."""

    data_dir: str = _knob(_has_id)
    commit_timeout: float = _knob(_positive)
    max_batch: int = _knob(_at_least_one)
    replicas: tuple[ReplicaConfig, ...] = _knob()
    #: bytes of recent record lines each replica's log keeps in memory once
    #: they are on disk (older records are read back from the file); the
    #: default is ``toystore.order.log.WINDOW_BYTES``, 4 MiB
    window_bytes: int = _knob(_not_negative, default=4 << 20)
    #: a follower that hears no leader for this long (up to twice as long, at random) campaigns
    election_timeout: float = _knob(_positive, default=1.0)
    #: seconds between a leader's heartbeats; well below the election timeout
    heartbeat: float = _knob(_positive, default=0.1)

    def replica(self, id: int) -> ReplicaConfig:
        """The replica with ``id``."""
        for replica in self.replicas:
            if replica.id == id:
                return replica
        raise ConfigError(f"no replica with id {id} in order.replicas (ids: {[r.id for r in self.replicas]})")


@dataclass(frozen=True)
class ClusterConfig:
    """The whole cluster file."""

    wire: WireConfig
    catalog: CatalogConfig
    frontend: FrontendConfig
    order: OrderConfig


def _build(cls: type, raw: Any, where: str) -> Any:
    """
    Make a ``cls`` dataclass from the TOML table ``raw``, checking that every
    key is known, present, of the right type and approved by its check.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'the file'} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(where, unknown[0])} is not a known setting")
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in raw:
            if f.default is not dataclasses.MISSING:
                continue  # an optional setting: the class's default
            raise ConfigError(f"{path} is missing")
        values[name] = _value(hints[name], raw[name], path)
        check = f.metadata.get("check")
        complaint = check(values[name]) if check else None
        if complaint:
            raise ConfigError(f"{path} {complaint}, not {raw[name]!r}")
    return cls(**values)


def _value(kind: Any, raw: Any, path: str) -> Any:
    """Check and convert one value to the annotated ``kind``."""
    if dataclasses.is_dataclass(kind):
        return _build(kind, raw, path)
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        if not isinstance(raw, list):
            raise ConfigError(f"{path} must be a list")
        return tuple(_value(item, each, f"{path}[{i}]") for i, each in enumerate(raw))
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"{path} must be {_NAMES[kind]}, not {raw!r}")
    return raw


_NAMES = {str: "a string", int: "an integer", float: "a number"}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_cluster(config: ClusterConfig) -> ClusterConfig:
    ids = [r.id for r in config.order.replicas]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"order.replicas ids must be unique, not {ids}")
    if config.order.heartbeat * 3 > config.order.election_timeout:
        raise ConfigError("order.heartbeat must be at most a third of order.election_timeout")
    if config.wire.idle_timeout <= config.wire.keepalive:
        # A ping's pong must have a keepalive period to come back before a connection counts as idle.
        raise ConfigError(
            f"wire.idle_timeout must be > wire.keepalive ({config.wire.keepalive}), not {config.wire.idle_timeout!r}"
        )
    secret = config.wire.secret
    if secret and (len(secret) < SECRET_MIN_LENGTH or not secret.isprintable()):
        raise ConfigError(f"wire.secret must be at least {SECRET_MIN_LENGTH} printable characters")
    check_internal_listen("catalog.lines", config.catalog.lines, config.wire)
    for i, replica in enumerate(config.order.replicas):
        check_internal_listen(f"order.replicas[{i}].lines", replica.lines, config.wire)
    return config


def is_loopback(endpoint: str) -> bool:
    """
    Whether a listen endpoint string binds to loopback only: 127.0.0.0/8,
    ``::1`` or ``localhost`` (a UNIX socket counts too).  A TCP endpoint
    without ``interface=`` binds every interface; an endpoint of another kind
    is taken to be reachable from elsewhere.
    """
    # The endpoint says where it binds only when it listens: let it listen on
    # a reactor that records the call and binds nothing.
    reactor = MemoryReactor()
    server = serverFromString(reactor, endpoint)
    if isinstance(server, UNIXServerEndpoint):
        return True
    if not isinstance(server, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        return False
    server.listen(Factory())
    interface = (reactor.tcpServers + reactor.sslServers)[0][-1]  # (each call ends with its interface)
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def check_internal_listen(setting: str, endpoint: str, wire: WireConfig) -> None:
    """
    Refuse an internal (lines) port that listens beyond loopback while no
    cluster secret makes its connections authenticate.

    :raises ConfigError: naming ``setting``.
    """
    complaint = _listen(endpoint)
    if complaint:
        raise ConfigError(f"{setting} {complaint}, not {endpoint!r}")
    if not wire.secret and not is_loopback(endpoint):
        raise ConfigError(
            f"{setting} listens beyond loopback ({endpoint}): set wire.secret or {SECRET_ENV}"
            " so that its connections must authenticate"
        )


def read_raw(path: str | None) -> dict[str, Any]:
    """
    The cluster file at ``path`` (the packaged default when None) as a dict.

    :raises ConfigError: when the file cannot be read or is not TOML.
    """
    try:
        if path is None:
            text = resources.files("toystore").joinpath(DEFAULT_CONFIG).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path or DEFAULT_CONFIG} is not valid TOML: {e}") from None


def dump(raw: dict[str, Any]) -> str:
    """
    Write a cluster file's dict back as TOML (the subset the cluster file
    uses: tables of scalars, and arrays of tables inside a table).
    """

    def scalar(value: Any) -> str:
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return str(value).lower() if isinstance(value, bool) else repr(value)

    lines: list[str] = []
    for section, table in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {scalar(value)}" for key, value in table.items() if not isinstance(value, list)]
        for key, value in table.items():
            if isinstance(value, list):
                for item in value:
                    lines.append(f"[[{section}.{key}]]")
                    lines += [f"{k} = {scalar(v)}" for k, v in item.items()]
        lines.append("")
    return "\n".join(lines)


def load(
    path: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> ClusterConfig:
    """
    Read, override and check the cluster file.

    :param path: the TOML file, or None for the packaged default.
    :param overrides: ``{section: {key: value}}`` to apply before checking, as
        given by command-line flags.
    :param environ: the environment (default ``os.environ``): a non-empty
        ``TOYSTORE_SECRET`` in it replaces ``wire.secret``, so that the
        secret can stay out of the file.
    :raises ConfigError: naming the first value that cannot be used.
    """
    raw = read_raw(path)
    secret = (os.environ if environ is None else environ).get(SECRET_ENV)
    if secret:
        overrides = {**(overrides or {}), "wire": {**(overrides or {}).get("wire", {}), "secret": secret}}
    for section, values in (overrides or {}).items():
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a table")
        table.update(values)
    return _check_cluster(_build(ClusterConfig, raw, ""))


class ServiceOptions(usage.Options):
    """
    The command line shared by every toystore plugin: ``--config FILE`` plus
    flags that override single values of the cluster file.

    Subclasses list their overriding flags in ``overrides``, mapping an option
    name to ``(section, key, type)``; after parsing, ``self.config`` is the
    checked :class:`ClusterConfig`.  A bad flag or config exits with one line
    naming the problem (status 1), never a usage dump or a traceback.
    """

    command = "toystore"
    overrides: dict[str, tuple[str, str, type]] = {}

    optParameters: list[list[Any]] = [
        ["config", "c", None, "The cluster file (TOML). Default: the packaged one-machine cluster."],
    ]
    optFlags: list[list[Any]] = [
        ["exit-on-stdin-close", None, "Stop when standard input closes (for a supervising parent)."],
    ]

    config: ClusterConfig

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, turning every usage error into a one-line exit."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"{self.command}: error: {e}") from None

    def postOptions(self) -> None:
        """Load the cluster file with the flags applied over it."""
        wanted: dict[str, dict[str, Any]] = {}
        for option, (section, key, kind) in self.overrides.items():
            if self.get(option) is not None:
                try:
                    value = kind(self[option])
                except ValueError:
                    raise usage.UsageError(f"--{option} must be {_NAMES[kind]}, not {self[option]!r}") from None
                wanted.setdefault(section, {})[key] = value
        try:
            self.config = load(self["config"], wanted)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
