"""No module of tests/ imports a test module (issue #20, item 7), read from the source with `ast`.

A helper or fixture borrowed from another test module ties the two together: running one runs
the other's collection, a fixture imported by name shadows the one in tests/conftest.py, and
ruff needs `noqa: F401, F811` to keep it. Shared helpers live in tests/factories.py and the
themed helper modules, fixtures in tests/conftest.py; this test names the import to move.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def is_test_module(name: str) -> bool:
    """`tests.test_x` or `tests.test_x.y`: a module pytest collects tests from."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] == "tests" and parts[1].startswith("test_")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the module: top level, in a function, relative
    (resolved against `tests`), `from tests import test_x`, and `importlib.import_module("...")`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("tests." + (node.module or "")).rstrip(".") if node.level else node.module or ""
            found.append((node.lineno, base))
            if not is_test_module(base):  # `from tests import test_x` names the module as an alias
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def test_imports_of_test_modules_are_recognised():
    tree = ast.parse("import tests.test_a\nfrom tests.test_b import x\nfrom tests import test_c\n"
                     "from .test_d import y\ndef f():\n    from . import test_e\n"
                     "importlib.import_module('tests.test_f')\nfrom tests.factories import make_study\n")
    hits = sorted({line for line, name in imported_modules(tree) if is_test_module(name)})
    assert hits == [1, 2, 3, 4, 6, 7]


def test_no_module_of_tests_imports_a_test_module():
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if is_test_module(name)
    ]
    assert offenders == [], "move the shared helper to tests/factories.py (or a themed helper module) " \
                            "and a shared fixture to tests/conftest.py:\n" + "\n".join(offenders)
