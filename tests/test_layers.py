"""The package's imports form no cycle and never point up a declared layer order.

Why: cycles between modules forced re-export tricks (PEP 562 ``__getattr__``) and private helpers
imported across files; a static walk (every ``import`` statement, function-level ones included, found
with ``ast``) keeps them from coming back. Imports under ``if TYPE_CHECKING:`` count too: a type
that needs a module above you is a sign the type lives in the wrong place.
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cotbench"

# Within each list, a module may import only modules at its own position or earlier (lower layers);
# entries are module names or package prefixes ("cotbench.tasks" covers cotbench.tasks.*).
LAYERS: list[list[str]] = [
    # the meta statistics: numerics leaf <- estimators <- analyses built on them <- the CLI
    [
        "cotbench.meta.numerics",
        "cotbench.meta.robust",
        "cotbench.meta.multilevel",
        "cotbench.meta.models",
        "cotbench.meta.bias|cotbench.meta.sensitivity|cotbench.meta.summaries|cotbench.meta.effects",
        "cotbench.meta.cli_stats",
        "cotbench.meta.cli",
    ],
    # the data flow, left to right: shared records <- answer extraction <- datasets <- the run pipeline
    # (prompts, solvers, backends, store, runner, summary, harness) <- analyses <- figures <- the CLI
    [
        "cotbench.paths",
        "cotbench.records",
        "cotbench.records",
        "cotbench.scoring",
        "cotbench.tasks",
        "cotbench.pipeline.settings",
        "cotbench.pipeline.prompts",
        "cotbench.solvers",
        "cotbench.pipeline.model_registry",
        "cotbench.pipeline.store",
        "cotbench.heads.intervene",
        "cotbench.backends",
        "cotbench.pipeline.config",
        "cotbench.pipeline.sampling",
        "cotbench.pipeline.runner",
        "cotbench.pipeline.summary",
        "cotbench.pipeline.progress",
        "cotbench.pipeline.harness",
        "cotbench.pipeline.console",
        "cotbench.pipeline.cli|cotbench.pipeline.batches_cli",
        "cotbench.analysis",
        "cotbench.published",
        "cotbench.meta",
        "cotbench.figures",
        "cotbench.heads",
        "cotbench.meta.cli|cotbench.meta.cli_stats",
        "cotbench.testing",
        "cotbench.cli|cotbench.__main__",
    ],
]
# Packages that must never import the command line (the CLI sits on top of them).
NEVER_IMPORT_CLI = ("cotbench.records", "cotbench.records", "cotbench.scoring", "cotbench.tasks", "cotbench.solvers",
                    "cotbench.backends", "cotbench.pipeline", "cotbench.analysis", "cotbench.figures", "cotbench.meta")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(target: str, known: set[str]) -> str | None:
    """The longest known module that ``target`` names (``a.b.c`` may be attribute ``c`` of ``a.b``)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Edges module -> imported module for every import statement inside ``cotbench``."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    g: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                # "from pkg import sub" depends on sub; "from mod import name" on mod
                targets = [_resolve(f"{base}.{a.name}", known) or base for a in node.names]
            for t in targets:
                hit = _resolve(t, known)
                # a module's own parent packages run before it anyway: not an edge
                if hit and hit != mod and not mod.startswith(hit + "."):
                    g[mod].add(hit)
    return g


def _layer_of(mod: str, layers: list[str]) -> int | None:
    """The position of the most specific entry naming ``mod`` (``cotbench.heads.intervene`` before ``cotbench.heads``)."""
    best, best_len = None, -1
    for i, entry in enumerate(layers):
        for prefix in entry.split("|"):
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def _is_cli(mod: str) -> bool:
    last = mod.rpartition(".")[2]
    return last == "cli" or last.startswith("cli_") or last.endswith("_cli") or mod == "cotbench.__main__"


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle graphlib finds, breaking each found one (at its first edge) to look for the next."""
    g = {a: set(bs) for a, bs in g.items()}
    found = []
    while True:
        try:
            graphlib.TopologicalSorter(g).prepare()
            return found
        except graphlib.CycleError as e:
            cyc = e.args[1]  # [n0, n1, ..., n0]: each module is imported by the one after it
            found.append(cyc)
            g[cyc[1]].discard(cyc[0])  # break this cycle, then look for the next


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for a, b in ((a, b) for a, bs in g.items() for b in bs):
        for layers in LAYERS:
            la, lb = _layer_of(a, layers), _layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} -> {b} (layer {la} imports layer {lb})")
        if a.startswith(NEVER_IMPORT_CLI) and not _is_cli(a) and _is_cli(b):
            out.append(f"{a} -> {b} (imports a command line)")
    return sorted(set(out))


def test_graph_sees_function_level_imports():
    g = import_graph()
    # meta/cli_stats.py imports the estimators inside its command functions; the walk must find them
    assert "cotbench.meta.models" in g["cotbench.meta.cli_stats"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each module imported by the next): " + "; ".join(" -> ".join(c) for c in found)


def test_every_module_has_a_place_in_the_data_flow():
    """A new module must be placed in the layer order, or the order would not constrain it."""
    flow, g = LAYERS[-1], import_graph()
    # a package whose __init__ imports nothing (a docstring only) constrains nothing
    loose = sorted(m for m in g if (g[m] or not ROOT.joinpath(*m.split(".")[1:], "__init__.py").is_file())
                   and _layer_of(m, flow) is None)
    assert not loose, f"modules without a layer in LAYERS: {loose}"


def test_no_import_points_up_a_layer():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, 1),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}}, 2),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, 0),
])
def test_cycle_detector_can_fail(edges, expected):
    assert len(cycles(edges)) == expected


def test_module_names_do_not_collide():
    """A module name means one thing: no two modules share a file name (beyond the conventional
    ``__init__``, ``cli`` and ``base``), and none shadows a standard-library module."""
    import sys
    from collections import Counter

    names = Counter(p.stem for p in ROOT.rglob("*.py") if p.stem not in ("__init__", "__main__", "cli", "base"))
    assert not [n for n, c in names.items() if c > 1], f"module names used twice: {[n for n, c in names.items() if c > 1]}"
    shadow = sorted(set(names) & set(sys.stdlib_module_names))
    assert not shadow, f"modules named like the standard library: {shadow}"

