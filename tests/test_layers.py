"""The package's import graph (grimp): no import circle, and the floors import only what is below them."""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")  # geopix[dev]


def _build():
    return grimp.build_graph("geopix", include_external_packages=False, exclude_type_checking_imports=False)


@pytest.fixture(scope="module")
def graph():
    return _build()


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), function-level imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_circle(graph) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    circled = _build()
    circled.add_import(importer="geopix.errors", imported="geopix.config")  # config imports errors
    assert ["geopix.config", "geopix.errors"] in _cycles(circled)


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("geopix.config", {"geopix.errors"}),
        ("geopix.source", {"geopix.errors"}),
        ("geopix.remote", {"geopix.errors", "geopix.source"}),
        ("geopix.read", {"geopix.errors", "geopix.source", "geopix.remote", "geopix.plan"}),
    ],
)
def test_a_floor_imports_only_what_is_below_it(graph, module: str, allowed: set[str]) -> None:
    assert graph.find_modules_directly_imported_by(module) - {"geopix"} <= allowed
