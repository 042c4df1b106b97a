"""``--help`` of train.py, eval.py and visualize.py: the config groups a user can pick.

Hydra's own listing shows every folder of conf/ (eval.py's ``task`` in train.py's
help) and every file (the private ``_protocol``, ``_energy``, ``_samples`` that
experiments include). conf/hydra/default.yaml's help template calls
``${nfvae_groups:<config name>}`` instead. No torch import: --help stays fast.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from nfvae.config import CONF_DIR


def _public(name: str) -> bool:
    return not name.startswith(("_", "."))


def _group_options(folder: Path, prefix: str) -> list[tuple[str, list[str]]]:
    """(group, options) of a folder: its own .yaml files make it a group whose nested
    folders are groups too (model/likelihood); a folder of folders only is one group
    whose options are paths (experiment=toy/u1)."""
    options = sorted(p.stem for p in folder.glob("*.yaml") if _public(p.stem))
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and _public(p.name))
    if not options:
        paths = sorted(str(p.relative_to(folder).with_suffix(""))
                       for p in folder.rglob("*.yaml")
                       if all(_public(part) for part in p.relative_to(folder).parts))
        return [(prefix, paths)] if paths else []
    found = [(prefix, options)]
    for sub in subfolders:
        found += _group_options(sub, f"{prefix}/{sub.name}")
    return found


def pickable_groups(config_name: str, conf_dir: Path = CONF_DIR) -> str:
    """The config groups a user of ``config_name`` (train, eval, visualize) can pick, one
    line each (``group: option, ...``): the groups of its defaults list and the
    groups nested in them; no private ``_*`` files, no other command's groups."""
    defaults = OmegaConf.load(conf_dir / f"{config_name}.yaml").get("defaults") or []
    groups = []
    for entry in defaults:
        if isinstance(entry, str) or not OmegaConf.is_dict(entry):
            continue
        for key in entry:
            group = str(key).split("@")[0].removeprefix("override ").strip()
            if group != "hydra" and (conf_dir / group).is_dir() and group not in groups:
                groups.append(group)
    lines = []
    for group in sorted(groups):
        for name, options in _group_options(conf_dir / group, group):
            lines.append(f"{name}: {', '.join(options)}")
    return "\n".join(lines)


def register_resolvers() -> None:
    """``${nfvae_groups:train}`` for the help template (conf/hydra/default.yaml)."""
    if not OmegaConf.has_resolver("nfvae_groups"):
        OmegaConf.register_new_resolver("nfvae_groups", pickable_groups)
