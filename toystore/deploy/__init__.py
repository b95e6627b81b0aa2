"""
What the store needs on real machines, shipped with the package: a systemd
unit for each of its processes, in ``toystore/deploy/systemd/``.

- ``toystore-catalog.service``: the catalog;
- ``toystore-order@.service``: a template, one instance per order replica
  (``toystore-order@2.service`` runs ``toystore-order --id 2``);
- ``toystore-frontend.service``: the front-end.

Each runs ``twistd --nodaemon --pidfile= <plugin> --config
/etc/toystore/cluster.toml`` (with ``--data-dir /var/lib/toystore/...`` for
the catalog and the replicas) from a virtualenv at ``/opt/toystore/venv``,
as the user ``toystore``, with the cluster secret in
``/etc/toystore/secret.env``.  ``docs/deploy.rst`` says how to install and
run them.
"""

from __future__ import annotations

from importlib import resources

#: The directory of the unit files inside this package.
SYSTEMD = "systemd"


def unit_files() -> dict[str, str]:
    """Each shipped systemd unit's file name and its text, sorted by name."""
    folder = resources.files(__name__).joinpath(SYSTEMD)
    units = sorted(
        (entry.name, entry.read_text("utf-8")) for entry in folder.iterdir() if entry.name.endswith(".service")
    )
    return dict(units)


__all__ = ["SYSTEMD", "unit_files"]
