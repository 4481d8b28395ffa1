"""The layering of src/: no import circle (function-local imports count), the command-line modules sit on top
(nothing imports them), a single run never imports the sweep package, and every top-level module says what it
owns in its first line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Console entry points: they import the library; no library module imports them.
CLI = ("decoderlab.train", "decoderlab.generate", "decoderlab.evaluate", "decoderlab.cli", "decoderlab.plot",
       "decoderlab.compare", "decoderlab.export")
# Modules a plain single run (train -> runner -> fit) or a checkpoint consumer imports: none may reach sweep/.
SINGLE_RUN = ("decoderlab.runner", "decoderlab.fit", "decoderlab.lit", "decoderlab.checkpoint", "decoderlab.vocab",
              "decoderlab.evaluate", "decoderlab.generate", "decoderlab.compare")


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        out[".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in the file (top level or inside a function)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges[m].update(n for n in names if n in mods and n != m and not m.startswith(n + "."))
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once, from its smallest module)."""
    cycles: set[tuple[str, ...]] = set()

    def dfs(v: str, stack: list[str], on: set[str], seen: set[str]) -> None:
        seen.add(v)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w in on:
                cyc = stack[stack.index(w):]
                i = cyc.index(min(cyc))
                cycles.add(tuple(cyc[i:] + cyc[:i]))
            elif w not in seen:
                dfs(w, stack, on, seen)
        stack.pop()
        on.discard(v)

    seen: set[str] = set()
    for v in sorted(edges):
        if v not in seen:
            dfs(v, [], set(), seen)
    return [list(c) for c in sorted(cycles)]


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_checker_finds_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_src():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles (arrows must point down):\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles)


def test_no_library_module_imports_a_command_line_module():
    edges = import_graph()
    bad = sorted(f"{m} imports {t}" for m, targets in edges.items() if not _in(m, CLI)
                 for t in targets if _in(t, CLI))
    assert not bad, bad


def test_a_single_run_never_reaches_the_sweep_package():
    edges = import_graph()
    reach: set[str] = set()
    todo = [m for m in edges if _in(m, SINGLE_RUN)]
    while todo:
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo += edges[m]
    assert not [m for m in reach if _in(m, ("decoderlab.sweep",))], sorted(reach)


@pytest.mark.parametrize("path", sorted(p.name for p in (SRC / "decoderlab").glob("*.py")))
def test_every_top_level_module_opens_with_what_it_owns(path: str):
    doc = ast.get_docstring(ast.parse((SRC / "decoderlab" / path).read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()[0]) > 20, f"{path}: no one-line docstring saying what it owns"
