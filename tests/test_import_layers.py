"""Imports point one way (issue #20), read from the source with `ast`, no module imported.

The layers, top to bottom (docs/architecture.md, "Import direction"):

    web and admin  →  workflows  →  steps / judgment / estimate  →  models  →  pure libraries

A module of `studies/` may import its own layer or a lower one, never a higher one, and no two
modules of `studies/` import each other, directly or through others. Every import counts: at the
top of a module, inside a function, under `TYPE_CHECKING`, relative, or by
`importlib.import_module` with a literal name.

A module's layer is the one of the longest prefix in `LAYERS` that names it (a prefix names a
module and everything under it), so a package (`studies.judgment`, `studies.estimate`,
`workers.stats`) places all its modules at once, and a module can be placed apart from its
package (`studies.estimate.planning_views` is a page). A new module of `studies/` must be given
a layer here: the test that every module has one says which to add.

As a script, `python tests/test_import_layers.py [-v]` prints the import cycles and the imports
that point up (with -v, every module's imports of `studies` and `workers` too).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Top to bottom. Both today's module names and the homes issue #20 moves them to are listed, so the
# check holds before and after the moves.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("web and admin", (
        "studies.admin", "studies.urls", "studies.views", "studies.researcher_views", "studies.forms",
        "studies.htmx", "studies.management", "studies.planning_views", "studies.estimate.planning_views",
    )),
    ("workflows", (
        "studies.services", "studies.pilots", "studies.simulated_annotators", "studies.tasks", "studies.demo",
        "studies.reproduction", "studies.job_rows",
    )),
    ("steps, judgment, estimate", (
        "studies.steps", "studies.importing", "studies.candidate_import",
        "studies.judgment", "studies.annotation", "studies.annotation_sql", "studies.participants", "studies.duration",
        "studies.estimate", "studies.allocation", "studies.results", "studies.results_cache", "studies.export", "studies.plans",
    )),
    ("models", (
        "studies.models", "studies.validation", "studies.text", "studies.templatetags", "studies.apps",
        "studies.migrations",
    )),
    ("pure libraries", ("workers", "studies.analysis", "studies.planning", "studies.planning_simulation")),
]
# The app package itself (`studies/__init__.py`, empty): imported by `from studies import x` only
# when x is not a module; it sits with the models.
APP_LAYER = "models"


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the module's layer (0 is the top), or None when no prefix names it."""
    if module == "studies":
        return [name for name, _ in LAYERS].index(APP_LAYER)
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), i)
    return None if best is None else best[1]


def studies_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the Django app by dotted name (packages by their own name), migrations aside."""
    found = {}
    for path in sorted((root / "studies").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every dotted name the module's source imports, wherever the import statement is.

    `from a import b` gives "a.b" (b a module of a, or a name defined in a); relative imports are
    resolved against the module's package; `import_module("x")` with a literal counts as `import x`.
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of `studies` and the `workers` names it imports (itself left out).

    A name is the longest module of `studies` that it is or lies under: `from studies import tasks`
    imports `studies.tasks`, `from studies.models import Study` imports `studies.models`.
    """
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        source = path.read_text(encoding="utf-8")
        for name in imported_names(source, module, is_package=path.name == "__init__.py"):
            if name == "workers" or name.startswith("workers."):
                targets.add(name)
                continue
            known = name
            while known and known not in modules:
                known = known.rpartition(".")[0]
            if known:
                targets.add(known)
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Each import from a lower layer into a higher one, as "a (layer) → b (layer)"."""
    breaches = []
    for module in sorted(graph):
        here = layer_of(module)
        for target in sorted(graph[module]):
            there = layer_of(target)
            if here is not None and there is not None and there < here:
                breaches.append(f"{module} ({LAYERS[here][0]}) → {target} ({LAYERS[there][0]})")
    return breaches


def describe_cycle(component: list[str], graph: Mapping[str, Iterable[str]]) -> str:
    edges = [f"{a} → {b}" for a in component for b in sorted(graph[a]) if b in component]
    return "; ".join(edges)


# --- the tests ------------------------------------------------------------------------------


def test_the_reader_sees_every_kind_of_import():
    """The scanner itself: a check that missed function-local or relative imports could not fail."""
    source = (
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from studies import services\n"
        "if TYPE_CHECKING:\n"
        "    from studies.models import Study\n"
        "def f():\n"
        "    from . import tasks\n"
        "    from .steps.pool import generators_record\n"
        "    import workers.generation\n"
        "    return importlib.import_module('studies.demo')\n"
    )
    names = imported_names(source, "studies.pilots")
    assert names == {"__future__.annotations", "importlib", "typing.TYPE_CHECKING", "studies.services",
                     "studies.models.Study", "studies.tasks", "studies.steps.pool.generators_record",
                     "workers.generation", "studies.demo"}


def test_the_checks_fail_on_a_cycle_and_on_an_upward_import():
    graph = {"studies.models": {"studies.services"}, "studies.services": {"studies.tasks"},
             "studies.tasks": {"studies.models"}, "studies.views": {"studies.models"}}
    assert cycles(graph) == [["studies.models", "studies.services", "studies.tasks"]]
    assert upward_imports(graph) == ["studies.models (models) → studies.services (workflows)"]


def test_layers_are_chosen_by_the_longest_prefix():
    assert LAYERS[layer_of("studies.estimate.planning_views")][0] == "web and admin"
    assert LAYERS[layer_of("studies.estimate.results")][0] == "steps, judgment, estimate"
    assert LAYERS[layer_of("studies.judgment.participants")][0] == "steps, judgment, estimate"
    assert LAYERS[layer_of("workers.stats.analysis")][0] == "pure libraries"
    assert layer_of("studies.servicesx") is None
    assert layer_of("django.db") is None


def test_the_graph_holds_the_app():
    graph = import_graph(studies_modules())
    assert len(graph) > 30
    assert "studies.tasks" in graph["studies.services"]  # services enqueues through the tasks
    assert "studies.models" in graph["studies.steps.pool"]
    assert "studies" not in graph["studies.services"]  # `from studies import tasks` names the module


def test_every_module_of_studies_has_a_layer():
    unplaced = sorted(m for m in studies_modules() if m != "studies" and layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in LAYERS (tests/test_import_layers.py): {unplaced}"


def test_no_module_of_studies_imports_a_higher_layer():
    breaches = upward_imports(import_graph(studies_modules()))
    assert not breaches, "imports that point up:\n" + "\n".join(breaches)


def test_no_two_modules_of_studies_import_each_other():
    graph = import_graph(studies_modules())
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe_cycle(c, graph) for c in found)


def test_nothing_in_studies_imports_the_url_conf():
    """The URLconf is the top: the admin mounts its researcher pages from the views' modules."""
    graph = import_graph(studies_modules())
    assert not [m for m, targets in graph.items() if "studies.urls" in targets]


if __name__ == "__main__":
    graph = import_graph(studies_modules())
    for component in cycles(graph):
        print("cycle:", describe_cycle(component, graph))
    for breach in upward_imports(graph):
        print("up:", breach)
    for module in sorted(m for m in graph if m != "studies" and layer_of(m) is None):
        print("no layer:", module)
    if "-v" in sys.argv:
        for module in sorted(graph):
            layer = layer_of(module)
            print(f"{module} [{'?' if layer is None else LAYERS[layer][0]}] → {', '.join(sorted(graph[module]))}")
