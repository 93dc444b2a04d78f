"""The shape of helpers/: imports point down — no cycle among its modules, and the library (data,
models, the federated core and its tasks, transfer, Flower) never imports the course layer above it
(presets, panels, widgets, plots, findings, exercises, run times, start-up check, benchmarks, site)."""

from __future__ import annotations

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
# the course layer: what a lesson uses to present, check and time the library's results
COURSE = {"lessons", "widgets", "plots", "findings", "exercises", "runtimes", "startup", "bench", "site"}


def imported_modules(source: str) -> set[str]:
    """The ``helpers`` modules a file's source imports, at any depth (also inside functions):
    ``from helpers import x``, ``from helpers.x import y``, ``import helpers.x``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "helpers":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("helpers."))
    return found


def import_graph(folder: Path = HELPERS) -> dict[str, set[str]]:
    """Module → the helpers modules it imports (itself left out); the Flower app's files count as one
    module, ``flower_app``."""
    modules = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"} | {"flower_app"}
    graph = {}
    for path in [*folder.glob("*.py"), *(folder / "flower_app").rglob("*.py")]:
        name = "flower_app" if "flower_app" in path.parts else path.stem
        if name == "__init__":
            continue
        graph.setdefault(name, set()).update(imported_modules(path.read_text(encoding="utf-8")) & modules - {name})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_reader_sees_every_form_at_any_depth():
    source = ("from helpers import fedcore as fc, plots\nimport helpers.mf\nimport numpy\n"
              "def f():\n    from helpers.lessons import MF_FEDAVG\n    import helpers.data as d\n")
    assert imported_modules(source) == {"fedcore", "plots", "mf", "lessons", "data"}


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_helpers_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_course_layer():
    graph = import_graph()
    assert COURSE <= set(graph), f"course modules not found: {sorted(COURSE - set(graph))}"
    upward = {module: sorted(imports & COURSE) for module, imports in graph.items()
              if module not in COURSE and imports & COURSE}
    assert upward == {}, f"library modules importing the course layer: {upward}"
