"""The public modules say what they export (``__all__``), and say all of it.

Public: the pure protocol library (``tether.protocol``), the API client (``tether.client``) and the
exception tree (``tether.errors``). Every name in ``__all__`` exists, none twice, and every public
class or function defined in the module is listed, so nothing public is exported by accident.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
from types import ModuleType

import pytest

import tether.client
import tether.protocol

PUBLIC_PACKAGES = (tether.protocol, tether.client)


def public_modules() -> list[str]:
    names = ["tether.errors"]
    for package in PUBLIC_PACKAGES:
        names += [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(names)


MODULES = public_modules()


def defined_here(module: ModuleType) -> set[str]:
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__}


def test_the_public_modules_are_found() -> None:
    assert len(MODULES) > 50 and "tether.protocol.flush_gate" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    if pathlib.Path(module.__file__ or "").name == "__init__.py" and not defined_here(module):
        return  # a namespace for its modules, nothing of its own
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    assert [n for n in exported if not hasattr(module, n)] == [], f"{name}.__all__ names what is not there"
    assert sorted(defined_here(module) - set(exported)) == [], f"{name} defines public names missing from __all__"
