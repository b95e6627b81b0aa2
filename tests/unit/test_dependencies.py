"""
The dependency rule of ``docs/architecture.rst`` ("Who may import what"),
checked on the source: the services meet only through the shared modules and
the wire.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import toystore

PACKAGE = Path(toystore.__file__).parent
PLUGINS = PACKAGE.parent / "twisted" / "plugins" / "toystore_plugins.py"

#: The three services: each a package that may import itself and the shared modules.
SERVICES = frozenset({"catalog", "order", "frontend"})
#: The tools around the store: they start, drive and measure it, and may import anything.
TOOLS = frozenset({"cli", "__main__", "loadgen", "testing", "supervise", "measure", "hosts"})
# Every other top-level module or package of toystore is shared: it may import only shared modules.


def part(module: str) -> str:
    """The top-level part of ``toystore`` that a dotted module name belongs to."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def role(top: str) -> str:
    """Whether a top-level part is a service, a tool or shared."""
    return "service" if top in SERVICES else "tool" if top in TOOLS else "shared"


def module_name(path: Path, package: Path) -> str:
    """The dotted name of the module in ``path``, a file of ``package``."""
    relative = path.relative_to(package.parent).with_suffix("")
    names = list(relative.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imports(path: Path, package: Path) -> list[tuple[int, str]]:
    """
    Every ``toystore`` module that the source in ``path`` imports, with its
    line: absolute imports as written, relative ones resolved.
    """
    module = module_name(path, package)
    parent = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")[: len(parent.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.append((node.lineno, target))
            else:  # "from .. import order" names the modules it imports
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "toystore" or name.startswith("toystore.")]


def violations(package: Path) -> list[str]:
    """Each import in the modules of ``package`` that breaks the rule, as ``file:line: what``."""
    broken = []
    for path in sorted(package.rglob("*.py")):
        here = part(module_name(path, package))
        for line, target in imports(path, package):
            there = part(target)
            if there == here or not there or role(here) == "tool" or role(there) == "shared":
                continue
            where = f"{path.relative_to(package.parent)}:{line}"
            broken.append(f"{where}: the {role(here)} {here!r} imports the {role(there)} {there!r} ({target})")
    return broken


class DependencyRuleTests(SynchronousTestCase):
    """No service imports another service or a tool, and no shared module imports either."""

    def test_the_tree_keeps_the_rule(self) -> None:
        """Every module of the package imports only what its part may."""
        broken = violations(PACKAGE)
        self.assertEqual(broken, [], "\n".join(["services meet only through shared modules and the wire:", *broken]))

    def test_every_service_is_there(self) -> None:
        """
        Every service the rule names is a package: a renamed service cannot slip out of the rule
        (a renamed tool would count as shared, and break it loudly).
        """
        self.assertEqual({name for name in SERVICES if (PACKAGE / name / "__init__.py").exists()}, SERVICES)

    def test_a_cross_service_import_is_caught(self) -> None:
        """An import of one service from another, absolute or relative, is reported with its line."""
        sources = {
            "order/bad_absolute.py": "from toystore.catalog.store import CatalogDB\n",
            "frontend/bad_relative.py": "import os\n\nfrom .. import order\n",
            "wire/bad_shared.py": "from ..frontend.cache import LRUCache\n",
            "catalog/fine.py": "from ..contract import BUY\nfrom . import store\nfrom ..wire import WireProtocol\n",
            "testing/fine_tool.py": "from ..order.journal import Log\nfrom ..catalog import seed\n",
        }
        root = Path(self.mktemp()) / "toystore"
        for name, source in sources.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        self.assertEqual(
            violations(root),
            [
                "toystore/frontend/bad_relative.py:3: the service 'frontend' imports the service 'order' "
                "(toystore.order)",
                "toystore/order/bad_absolute.py:1: the service 'order' imports the service 'catalog' "
                "(toystore.catalog.store)",
                "toystore/wire/bad_shared.py:1: the shared 'wire' imports the service 'frontend' "
                "(toystore.frontend.cache)",
            ],
        )

    def test_the_plugin_file_imports_only_twisted(self) -> None:
        """twistd imports the plugin file on every run, so it imports nothing but Twisted."""
        tree = ast.parse(PLUGINS.read_text(encoding="utf-8"))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        self.assertEqual([n for n in names if n != "__future__" and not n.startswith("twisted")], [])
