"""Layers import downward only: no import cycle between parrbm's parts (the folders
strategies/, harness/, analysis/, and each module of the root package), imports written
inside functions included -- so that no part needs an import inside a function to dodge
a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("strategies", "harness", "analysis")


def part_of_module(name: str) -> str | None:
    p = name.split(".")
    if p[0] != "parrbm" or len(p) == 1:
        return None
    return p[1] if p[1] in FOLDERS else f"parrbm.{p[1]}"


def part_of_file(f: Path) -> str:
    rel = f.relative_to(ROOT)
    if rel.parts[0] in FOLDERS:
        return rel.parts[0]
    return "parrbm" if rel.parts[1:] == ("__init__.py",) else f"parrbm.{rel.parts[1].removesuffix('.py')}"


def import_edges() -> dict[str, dict[str, str]]:
    """part -> {imported part: where}."""
    edges: dict[str, dict[str, str]] = {}
    for top in (*FOLDERS, "parrbm"):
        for f in sorted((ROOT / top).rglob("*.py")):
            src = part_of_file(f)
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                targets = set()
                if isinstance(node, ast.Import):
                    targets = {part_of_module(a.name) for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module == "parrbm":
                        targets = {part_of_module(f"parrbm.{a.name}") for a in node.names}
                    else:
                        targets = {part_of_module(node.module)}
                for t in targets - {None, src, "parrbm"}:
                    edges.setdefault(src, {}).setdefault(t, f"{f.relative_to(ROOT)}:{node.lineno}")
    return edges


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one part (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_parts():
    edges = import_edges()
    assert edges["strategies"] and edges["harness"] and edges["analysis"]  # the walk found the imports
    found = cycles(edges)
    assert not found, "\n".join(
        f"cycle {' / '.join(g)}: " + "; ".join(f"{a} -> {b} ({edges[a][b]})" for a in g for b in edges[a] if b in g)
        for g in found
    )


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}, "d": {"a": "w"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": "x"}, "b": {}}) == []


def test_the_layers_go_downward():
    """strategies use the accounting and the core, never the harness or the analysis;
    the harness never uses the analysis (the analysis measures with the harness)."""
    edges = import_edges()
    assert not {"harness", "analysis"} & set(edges.get("strategies", {}))
    assert "analysis" not in edges.get("harness", {})
