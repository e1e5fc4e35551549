"""The layering rules of docs/architecture.md, checked on the source: who may import whom.

Parsed with ``ast`` (nothing is imported), so a rule broken only inside a function or under
``TYPE_CHECKING`` is caught too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tether"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """Every ``tether`` module ``path`` imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from tether.server import hub`` imports the module tether.server.hub
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "tether" or m.startswith("tether.")}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}
assert len(MODULES) > 100, f"found only {len(MODULES)} modules under {PACKAGE}"


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offending(importer_pkg: str, forbidden: list[str]) -> list[str]:
    return sorted(f"{mod} imports {imp}" for mod, imps in IMPORTS.items() if under(mod, importer_pkg)
                  for imp in imps if any(under(imp, f) for f in forbidden))


TOP = sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1})
RULES = {
    # the pure core: nothing of Tether but itself
    "tether.protocol": [f"tether.{p}" for p in TOP if p not in ("protocol",)],
    # the server meets bridges, agents and clients only over the wire
    "tether.server": ["tether.client", "tether.bridge", "tether.agent", "tether.cli", "tether.repl",
                      "tether.claude", "tether.remote"],
    "tether.client": ["tether.server", "tether.bridge", "tether.agent", "tether.cli", "tether.repl",
                      "tether.claude", "tether.remote"],
    "tether.bridge": ["tether.server", "tether.cli"],
    "tether.agent": ["tether.server", "tether.cli", "tether.bridge"],
    "tether.repl": ["tether.server", "tether.cli"],
    "tether.claude": ["tether.server", "tether.cli"],
    "tether.remote": ["tether.server", "tether.cli", "tether.bridge"],
    # web pages go through the session service, never the store
    "tether.server.web": ["tether.server.store"],
}


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert offending(package, RULES[package]) == []


def test_protocol_imports_only_the_standard_library_and_itself() -> None:
    import sys
    allowed = set(sys.stdlib_module_names) | {"tether", "typing_extensions"}
    bad = []
    for name, path in MODULES.items():
        if not under(name, "tether.protocol"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{name} imports {r}" for r in roots if r.split(".")[0] not in allowed]
    assert bad == []


def test_only_cli_composes() -> None:
    """Nothing below the command line imports it (``tether.cli`` sits on top)."""
    assert sorted(f"{m} imports {i}" for m, imps in IMPORTS.items() if not under(m, "tether.cli")
                  for i in imps if under(i, "tether.cli")) == []


def routers() -> set[str]:
    return {name for name, path in MODULES.items()
            if under(name, "tether.server") and "APIRouter(" in path.read_text(encoding="utf-8")}


def test_routers_never_import_routers() -> None:
    found = routers()
    assert found, "no router modules found: the check would pass vacuously"
    assert sorted(f"{r} imports {i}" for r in found for i in IMPORTS[r] if i in found and i != r) == []
