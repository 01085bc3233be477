"""Dependencies point one way: adapters -> third-party only; guard_plugin -> adapters;
distill -> both (docs/architecture.md). An import against that direction, even a lazy one inside
a function, fails here; the one documented exception is listed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"adapters": {"guard_plugin", "distill"}, "guard_plugin": {"distill"}}
# harmaug serve builds the default guard when the registry has none (lazily, in a function)
ALLOWED = {("guard_plugin/serve.py", "distill.bootstrap")}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_back_up_the_layers(package: str) -> None:
    wrong = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / package).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
        and (path.relative_to(ROOT).as_posix(), module) not in ALLOWED
    )
    assert wrong == []
