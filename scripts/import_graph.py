"""Print nfvae's internal import graph: each module, its importers, its line count.

    python scripts/import_graph.py [--edges]

Reads the source with ast (imports nothing), so it runs without torch installed.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nfvae"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path, modules: set[str]) -> set[str]:
    """The nfvae modules that ``path`` imports (``from a.b import c`` counts a.b.c if it
    is a module, else a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
                break
    return found


def graph() -> dict[str, set[str]]:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): internal_imports(p, modules) - {module_name(p)} for p in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", action="store_true", help="print every import edge")
    args = parser.parse_args()
    edges = graph()
    importers: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            importers[target].add(source)
    print(f"{'module':40s} {'lines':>5s} {'importers':>9s}")
    for name in sorted(edges):
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        lines = len(path.read_text().splitlines())
        print(f"{name:40s} {lines:5d} {len(importers[name]):9d}")
    if args.edges:
        for source in sorted(edges):
            for target in sorted(edges[source]):
                print(f"{source} -> {target}")


if __name__ == "__main__":
    main()
