"""The validation package depends on numpy and the standard library only (no flwr, no torch)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import oneliac_flwr.validation

PACKAGE = Path(oneliac_flwr.validation.__file__).parent
ALLOWED = {"numpy", "oneliac_flwr.errors", "oneliac_flwr.validation"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_numpy_stdlib_and_own_modules_are_imported() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        for name in imported_modules(path):
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or any(
                name == prefix or name.startswith(prefix + ".") for prefix in ALLOWED
            )
            assert allowed, f"{path.name} imports {name}"
