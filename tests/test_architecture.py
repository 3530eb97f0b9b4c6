"""The import contract: every package imports only the layers below it, and no files import each other in a circle.

Read from the source with `ast` (module-level imports and those inside functions alike), so a lazy import cannot
hide a cycle. `LAYERS` lists them lowest first; packages of one layer never import each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("modeling_mage",),  # remote code: torch and transformers only
    ("processing_mage",),
    ("mage_testing", "shapeworld"),  # the tiny-model kit; the data generator (knows no model, no tool code)
    ("inference",),  # the chat prompt and greedy generation shared by evaluation, tool use and serving
    ("training", "tool_use"),
    ("evaluation",),
    ("alignment",),  # objectives plug into training through its registry; training never imports alignment
    ("mage_cli", "benchmarks"),  # the console script and `mage serve`'s app; the speed and cost benchmarks
)
FORBIDDEN = {("evaluation", "training")}  # allowed by the ranks, excluded by design (evaluation never trains)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def _modules() -> dict[str, Path]:
    packages = [p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests"]
    files = {}
    for package in packages:
        for path in package.rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[module.removesuffix(".__init__")] = path
    return files


def _edges(files: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names]
                names = [n for n in subs if n in files] + ([base] if any(n not in files for n in subs) else [])
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    edges[module].add(name)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, seen = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append(cycle + [nxt])
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_every_package_has_a_layer():
    files = _modules()
    assert sorted({m.split(".")[0] for m in files} - set(RANK)) == []


def test_packages_import_only_lower_layers():
    files = _modules()
    edges = _edges(files)
    # the reader sees relative, absolute and in-function imports (so the checks below cannot pass on an empty graph)
    assert "modeling_mage.ian" in edges["modeling_mage.modeling_mage"]
    assert "modeling_mage" in {t.split(".")[0] for t in edges["mage_testing.tiny"]}
    wrong = set()
    for module, targets in edges.items():
        for target in targets:
            a, b = module.split(".")[0], target.split(".")[0]
            if a != b and (RANK[b] >= RANK[a] or (a, b) in FORBIDDEN):
                wrong.add(f"{module} -> {target}")
    assert sorted(wrong) == []


def test_no_import_cycles_between_files():
    assert _cycles(_edges(_modules())) == []
