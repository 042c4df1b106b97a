"""Imports point downward only: the layers of docs/architecture.md, read from the source.

Every module of nfvae/ is parsed (nothing imported) and each ``import`` / ``from ...
import`` of another nfvae module must name one of the same or a lower layer. A
module the map does not place fails the test too, so a new file gets a conscious
place (a new model kind in nfvae/modules/ is placed already).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nfvae"

#: Lowest first. A module may import modules of its own layer and of those below it.
LAYERS = ("base", "flows", "parts", "model", "modules", "viz", "tasks", "entry")

#: (pattern, layer): the first pattern that matches a module's dotted name places it.
PLACES = (
    # base: no knowledge of models; errors, config plumbing, process facts, logging details
    ("nfvae", "base"),
    ("nfvae.errors", "base"),
    ("nfvae.cache", "base"),
    ("nfvae.config", "base"),
    ("nfvae.distributed", "base"),
    ("nfvae.validation", "base"),
    ("nfvae.help", "base"),
    ("nfvae.eventfiles", "base"),
    ("nfvae.hparams", "base"),
    ("nfvae.tb_logger", "base"),
    ("nfvae.progress", "base"),
    ("nfvae.schedules", "base"),
    ("nfvae.logging_steps", "base"),
    # flows: bijections and their parameter sources
    ("nfvae.flows", "flows"),
    ("nfvae.flows.*", "flows"),
    # parts: networks, likelihoods, distributions, data, targets
    ("nfvae.nets", "parts"),
    ("nfvae.nets.*", "parts"),
    ("nfvae.likelihoods", "parts"),
    ("nfvae.distributions", "parts"),
    ("nfvae.priors", "parts"),
    ("nfvae.data", "parts"),
    ("nfvae.data.*", "parts"),
    ("nfvae.toy", "parts"),  # imports none of its modules
    ("nfvae.toy.targets", "parts"),
    ("nfvae.toy.data", "parts"),
    ("nfvae.image_flow.data", "model"),  # fixed per-image noise: nfvae.evaluation.stream_seed
    # model: the maths of a model and what every module shares (checkpoints, loader,
    # cross-cutting callbacks)
    ("nfvae.model", "model"),
    ("nfvae.objectives", "model"),
    ("nfvae.evaluation", "model"),
    ("nfvae.settings", "model"),
    ("nfvae.compiling", "model"),  # the training step compiled or eager, for every module
    ("nfvae.checkpoints", "model"),
    ("nfvae.loading", "model"),
    ("nfvae.callbacks", "model"),
    ("nfvae.callbacks.*", "model"),
    # modules: one LightningModule per kind of model
    ("nfvae.module", "modules"),
    ("nfvae.modules", "modules"),
    ("nfvae.modules.*", "modules"),
    ("nfvae.toy.module", "modules"),
    ("nfvae.image_flow", "base"),  # a docstring only
    ("nfvae.image_flow.module", "modules"),
    # viz: figures, the callbacks that log them, the health checks that read them
    ("nfvae.viz", "viz"),
    ("nfvae.viz.*", "viz"),
    ("nfvae.diagnose", "viz"),
    ("nfvae.diagnose.*", "viz"),
    ("nfvae.curves", "viz"),
    ("nfvae.image_flow.figures", "viz"),
    ("nfvae.image_flow.loggers", "viz"),
    # tasks: plain functions of a config (train, nll, ood, diagnose, visualize)
    ("nfvae.training", "tasks"),
    ("nfvae.tasks", "tasks"),
    ("nfvae.tasks.*", "tasks"),
    # entry points: the commands (@hydra.main) and what they share
    ("nfvae.cli", "entry"),
    ("nfvae.train", "entry"),
    ("nfvae.eval", "entry"),
    ("nfvae.visualize", "entry"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str | None:
    for pattern, layer in PLACES:
        if fnmatch.fnmatchcase(name, pattern):
            return layer
    return None


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imported_modules(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, nfvae module) for each import in ``path`` that runs (not TYPE_CHECKING-only);
    ``from a import b`` counts ``a.b`` when that is a module, else ``a``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        for options in candidates:
            target = next((option for option in options if option in modules), None)
            if target is None:  # `import nfvae.flows.base` names a module; an attribute: its owner
                target = next((option.rpartition(".")[0] for option in options
                               if option.rpartition(".")[0] in modules), None)
            if target is not None and target != name:
                found.append((node.lineno, target))
    return sorted(set(found))


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wrong_way_imports(modules: dict[str, Path]) -> list[str]:
    """One sentence per import of a higher layer."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    problems = []
    for name, path in modules.items():
        source_layer = layer_of(name)
        for line, target in imported_modules(path, set(modules)):
            target_layer = layer_of(target)
            if source_layer and target_layer and rank[target_layer] > rank[source_layer]:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {name} ({source_layer}) "
                                f"imports {target} ({target_layer}), a higher layer")
    return problems


def test_every_module_has_a_layer():
    unplaced = [name for name in package_modules() if layer_of(name) is None]
    assert not unplaced, (f"modules without a layer: {unplaced}; place them in PLACES here "
                          "and in docs/architecture.md")


def test_no_module_imports_a_higher_layer():
    problems = wrong_way_imports(package_modules())
    assert not problems, "imports pointing upward:\n" + "\n".join(problems)


def test_a_wrong_way_import_is_caught(tmp_path, monkeypatch):
    """The check itself can fail: a flow that imports the VAE's LightningModule, and a
    relative import of the commands from the model layer, are both reported."""
    (tmp_path / "nfvae" / "flows").mkdir(parents=True)
    for name in ("__init__.py", "module.py", "cli.py", "model.py"):
        (tmp_path / "nfvae" / name).write_text("")
    (tmp_path / "nfvae" / "flows" / "__init__.py").write_text("")
    (tmp_path / "nfvae" / "flows" / "planar.py").write_text(
        "import torch\nfrom nfvae.module import FlowVAEModule\n")
    (tmp_path / "nfvae" / "model.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nfvae import module\n"
        "from . import cli\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = wrong_way_imports(
        {module_name(p): p for p in sorted((tmp_path / "nfvae").rglob("*.py"))})
    assert len(problems) == 2, problems
    assert any("nfvae.flows.planar (flows) imports nfvae.module (modules)" in p
               for p in problems)
    assert any("nfvae.model (model) imports nfvae.cli (entry)" in p for p in problems)


def test_importing_the_lower_layers_loads_nothing_above_them():
    """What the source check cannot see: a package's __init__ runs on importing any of
    its modules, so ``from nfvae.toy.targets import ...`` would load nfvae.toy.module."""
    lower = [name for name in package_modules() if layer_of(name) in ("base", "flows", "parts",
                                                                      "model")]
    code = ("import importlib, json, sys\n"
            f"for name in {lower!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('nfvae'))))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    above = [m for m in loaded if layer_of(m) in ("modules", "viz", "tasks", "entry")]
    assert not above, f"importing the lower layers loaded higher ones: {above}"


@pytest.mark.parametrize("name, layer", [("nfvae.flows.image.glow", "flows"),
                                         ("nfvae.modules.image_flow", "modules"),
                                         ("nfvae.tasks.nll", "tasks")])
def test_new_files_in_the_documented_places_are_placed(name, layer):
    assert layer_of(name) == layer
