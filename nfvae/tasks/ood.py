"""Outlier detection by likelihood: ``python eval.py task=ood ckpt_path=...
ood_data=[omniglot,uniform_noise,mnist:invert]``.

A model trained on one dataset scores images by its negative log-likelihood: a VAE by
the importance-sampled -log p(x) ~ -log (1/S) sum_s p(x, zK_s) / qK(zK_s|x) (Burda et
al. 2016), an image flow exactly (given its dequantization draws). The
in-distribution test set is scored once, then each other dataset alike; per other
set, the AUROC of "NLL separates the other set from the test set" summarises how
well the likelihood detects outliers (0.5: chance; below 0.5: the other data get
*higher* likelihood, the failure Nalisnick et al. 2019 describe for flows). Every
set goes through the module's one fixed-noise NLL (``example_nll``), so the
in-distribution NLLs are those task=nll gives on the same checkpoint and examples.
The histograms (in-distribution against each other set, one panel each) go to a PNG
and to TensorBoard (``ood/nll_histograms``), the figures to ood.json.

An other set is a conf/data/ name, optionally followed by transforms applied to its
images in order: ``mnist:invert`` (1 - x), ``mnist:hflip`` (left-right mirror),
``mnist:vflip`` (upside down), ``mnist:hflip:invert``. It must reach the model as
its training data did: the same image shape (else this refuses), grey levels for a
grey-level model (a data config that would binarize is told ``binarize=none``), and
binary for a binary model (a grey-level set is binarized once with a fixed seed).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nfvae.config import CONF_DIR
from nfvae.tasks.common import (
    build_datamodule,
    check_output_dir,
    checkpoint_and_data,
    example_nlls,
    num_samples,
)

log = logging.getLogger(__name__)

#: Image transforms an other set's name can end in (``mnist:invert``), on (N, C, H, W).
TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "invert": lambda x: 1 - x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
}


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of x, ties given the mean of the ranks they span."""
    sorted_x, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def auroc(negatives: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of scores where positives should score higher.

    Equals P(s_pos > s_neg) + P(s_pos = s_neg) / 2 over all pairs (the Mann-Whitney U
    statistic over n_pos n_neg), computed from ranks in O(n log n).
    """
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError("AUROC needs at least one score of each kind")
    ranks = average_ranks(torch.cat([negatives.double(), positives.double()]))
    n_neg, n_pos = len(negatives), len(positives)
    rank_sum = ranks[n_neg:].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


MISSING_OTHER = ("task=ood needs the other dataset: ood_data=<name of a conf/data/ config> "
                 "(the short spelling of task.other=<name>), e.g. ood_data=omniglot, or "
                 "several at once: ood_data=[omniglot,uniform_noise,mnist:invert]")


@dataclass
class OtherSet:
    """One other dataset as asked for: ``name`` (its spelling in task.other, the key of
    its results), its conf/data/ name (None for a full config given from Python), its
    transforms, its resolved data config and the data options the user set."""

    name: str
    data_name: str | None
    transforms: tuple[str, ...]
    config: DictConfig
    overridden: frozenset[str] = field(default_factory=frozenset)


def parse_other(entry: str) -> tuple[str, tuple[str, ...]]:
    """``"mnist:hflip:invert"`` -> ``("mnist", ("hflip", "invert"))``, transforms checked."""
    data_name, *transforms = (part.strip() for part in str(entry).split(":"))
    if not data_name:
        raise ValueError(f"task.other entry {entry!r} names no dataset: write "
                         "<data>[:<transform>...], e.g. mnist:invert")
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"task.other entry {entry!r}: unknown transform {unknown[0]!r}; "
                         f"choose from {', '.join(TRANSFORMS)} (e.g. mnist:invert)")
    return data_name, tuple(transforms)


def apply_transforms(x: Tensor, transforms: tuple[str, ...]) -> Tensor:
    """``x`` (N, C, H, W) through each named transform, in order."""
    if transforms and x.dim() != 4:
        raise ValueError(f"the transforms {', '.join(transforms)} act on images (N, C, H, W), "
                         f"got data of shape {tuple(x.shape)}")
    for name in transforms:
        x = TRANSFORMS[name](x)
    return x


def _entries(other: Any) -> list[Any]:
    """task.other as a list: one name or config, or a non-empty list of them."""
    if isinstance(other, (str, Mapping)) or OmegaConf.is_dict(other):
        return [other]
    if (isinstance(other, (list, tuple)) or OmegaConf.is_list(other)) and len(other):
        return list(other)
    raise ValueError(f"{MISSING_OTHER} (got {other!r})")


def _available_data() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def _compose_data(names: list[str]) -> dict[str, DictConfig]:
    """The conf/data/ config of each name, unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    available = _available_data()

    def compose_all() -> dict[str, DictConfig]:
        found = {}
        for name in names:
            try:
                found[name] = compose(config_name=None, overrides=[f"+data={name}"]).data
            except MissingConfigException as error:
                raise ValueError(
                    f"task.other={name}: no such data config; choose one of "
                    f"{', '.join(available)} (each optionally followed by transforms, "
                    f"{', '.join(':' + t for t in TRANSFORMS)})") from error
        return found

    if GlobalHydra.instance().is_initialized():  # inside eval.py's @hydra.main
        return compose_all()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose_all()


def _resolved(data: Any, cfg: DictConfig, overrides: Mapping[str, Any]) -> DictConfig:
    """``data`` with ``overrides`` merged on top, resolved against the run's paths and seed."""
    wrapper = OmegaConf.create({
        "paths": {"data_dir": cfg.paths.data_dir},
        "seed": cfg.seed,
        "data": OmegaConf.to_container(data, resolve=False) if OmegaConf.is_config(data)
        else dict(data),
    })
    wrapper.data = OmegaConf.merge(wrapper.data, dict(overrides))
    return OmegaConf.create(OmegaConf.to_container(wrapper, resolve=True)["data"])


def other_sets(other: Any, cfg: DictConfig, other_data: Any = None) -> list[OtherSet]:
    """Each other dataset of ``task.other`` with its config, checked before any loading.

    ``other``: a conf/data/ name with optional transforms (``mnist:invert``), a full data
    config with ``_target_``, or a list of them. ``other_data`` (``task.other_data``)
    overrides data options: a key naming one of the listed datasets holds that
    dataset's own options (``+task.other_data.npz.path=...``); any other key goes to
    every set (``+task.other_data.binarize=static``), and each set's config must have it
    when the sets are of several datasets.
    """
    entries = _entries(other)
    parsed: list[tuple[str, str | None, tuple[str, ...], Any]] = []
    for entry in entries:
        if isinstance(entry, Mapping) or OmegaConf.is_dict(entry):
            if "_target_" not in entry:
                raise ValueError(f"task.other: a data config needs its _target_ (got {entry!r})")
            parsed.append((_data_name(entry), None, (), entry))
        elif isinstance(entry, str):
            data_name, transforms = parse_other(entry)
            parsed.append((entry, data_name, transforms, None))
        else:
            raise ValueError(f"{MISSING_OTHER} (got the entry {entry!r})")
    names = [name for name, *_ in parsed]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"task.other lists {', '.join(twice)} more than once")

    data_names = {data_name for _, data_name, _, _ in parsed if data_name}
    composed = _compose_data(sorted(data_names))
    given = (OmegaConf.to_container(other_data, resolve=True) if OmegaConf.is_config(other_data)
             else dict(other_data or {}))
    unlisted = sorted(key for key in given if key in _available_data() and key not in data_names)
    if unlisted:
        raise ValueError(f"task.other_data.{unlisted[0]} sets options of {unlisted[0]}, which "
                         f"task.other does not list (it lists {', '.join(names)})")
    own = {key: value for key, value in given.items()
           if key in data_names and isinstance(value, Mapping)}
    common = {key: value for key, value in given.items() if key not in own}

    sets = []
    several = len({data_name or name for name, data_name, _, _ in parsed}) > 1
    for name, data_name, transforms, config in parsed:
        data = composed[data_name] if data_name else config
        for key in common:
            if several and key not in data:
                raise ValueError(
                    f"+task.other_data.{key}=... goes to every other set, but {name}'s "
                    f"config has no option {key!r}; give it to one dataset as "
                    f"+task.other_data.<data>.{key}=... (one of {', '.join(sorted(data_names))})")
        overrides = {**common, **own.get(data_name, {})}
        sets.append(OtherSet(name, data_name, transforms, _resolved(data, cfg, overrides),
                             frozenset(overrides)))
    return sets


def _is_binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _data_name(data_cfg: Any) -> str:
    """``nfvae.data.MNISTDataModule`` -> ``MNIST``."""
    return str(data_cfg["_target_"]).rsplit(".", 1)[-1].removesuffix("DataModule")


def _tag(name: str) -> str:
    """An other set's name as a TensorBoard tag part (``mnist:invert`` -> ``mnist_invert``)."""
    return re.sub(r"[^-\w.]", "_", name)


def _nll_summary(nll: Tensor, dims: int) -> dict[str, float | int]:
    """Count, mean, std (0 for one image) and bits per dimension of per-image NLLs."""
    mean = float(nll.mean())
    return {"n": len(nll), "mean": mean, "std": float(nll.std()) if len(nll) > 1 else 0.0,
            "bpd": mean / (dims * math.log(2))}


def histogram_figure(nll_in: Tensor, nll_others: Mapping[str, Tensor], name_in: str,
                     areas: Mapping[str, float], dims: int, split: str = "test",
                     bins: int = 50) -> Figure:
    """One panel per other set: its NLL histogram over the in-distribution one, in
    bits/dim, on bins shared within the panel, each set's bars its fraction of images so
    unequal sizes compare. A panel whose NLLs (all positive) span more than a factor
    of 50 gets log-spaced bins on a log axis: a flow's NLL of noise can be 10^4 times its
    NLL of data, and linear bins would then hide both sets in the first one."""
    count = len(nll_others)
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.4), constrained_layout=True)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    to_bpd = 1 / (dims * math.log(2))
    for ax, (name, nll_out) in zip(axes, nll_others.items()):
        both = torch.cat([nll_in, nll_out]).double() * to_bpd
        finite = both[torch.isfinite(both)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        log_axis = lo > 0 and hi / lo > 50
        edges = (torch.logspace(math.log10(lo), math.log10(hi), bins + 1, dtype=torch.float64)
                 if log_axis else torch.linspace(lo, hi, bins + 1, dtype=torch.float64)).numpy()
        edges[0], edges[-1] = lo, hi  # exactly, or rounding drops the extreme images
        for values, label in ((nll_in, f"{name_in} (n={len(nll_in)})"),
                              (nll_out, f"{name} (n={len(nll_out)})")):
            shown = (values.double() * to_bpd).numpy()
            ax.hist(shown, bins=edges, weights=[1 / len(shown)] * len(shown), alpha=0.6,
                    label=label)
        if log_axis:
            ax.set_xscale("log")
        ax.set_title(f"{name}: AUROC {areas[name]:.3f}")
        ax.set_xlabel("NLL (bits/dim" + (", log scale)" if log_axis else ")"))
        ax.legend(fontsize="small")
    for ax in axes[::cols]:
        ax.set_ylabel("fraction of images")
    for ax in axes[count:]:
        ax.set_visible(False)
    figure.suptitle(f"NLL of {split} images: {name_in} (in-distribution) against each other set")
    return figure


@torch.no_grad()
def detect_outliers(cfg: DictConfig, other: Any = None, other_data: Any = None,
                    max_examples: int | None = None, bins: int = 50) -> dict[str, Any]:
    """Score the test set once and each ``other`` dataset by NLL; write ood.json, a PNG
    and TensorBoard; return the results (``results["others"][name]["auroc"]``).

    The arguments are conf/task/ood.yaml's options (``other``: one entry or a list, see
    ``other_sets``). ``cfg``: a composed eval config (conf/eval.yaml) with ckpt_path;
    from Python, ``detect_outliers(cfg, other=["omniglot", "mnist:invert"])``.
    """
    torch.manual_seed(cfg.seed)
    sets = other_sets(other, cfg, other_data)  # fail on a bad name before loading
    module, in_data = checkpoint_and_data(cfg)
    in_cfg = cfg.get("data") or module.hparams.get("data")
    name_in = _data_name(in_cfg)
    data_shape = tuple(module.hparams["data_shape"])
    split = cfg.eval.split
    x_in = in_data.split(split)[0][:max_examples]
    binary_model = _is_binary(x_in)

    images, binarized, loaded = {}, {}, {}
    for one in sets:
        config = one.config
        if not binary_model and config.get("binarize", "none") != "none" \
                and "binarize" not in one.overridden:
            # A grey-level model: the other set's grey levels, not a binarized draw.
            config = OmegaConf.merge(config, {"binarize": "none"})
        key = json.dumps(OmegaConf.to_container(config), sort_keys=True, default=str)
        if key not in loaded:
            loaded[key] = build_datamodule(config)
        datamodule = loaded[key]
        if tuple(datamodule.data_shape) != data_shape:
            raise ValueError(
                f"task.other={one.name} gives images of shape {tuple(datamodule.data_shape)}, "
                f"but the model takes {data_shape}: bring the other dataset to the model's "
                "input shape (e.g. +task.other_data.omniglot.image_size=28, "
                "+task.other_data.uniform_noise.shape=[C,H,W], or image_shape for npz) "
                "or choose one of the same shape")
        x_out = apply_transforms(datamodule.split(split)[0][:max_examples], one.transforms)
        binarized[one.name] = binary_model and not _is_binary(x_out)
        if binarized[one.name]:
            # The model has only seen 0/1 pixels: draw the other set's pixels once, seeded.
            generator = torch.Generator().manual_seed(int(cfg.seed))
            x_out = torch.bernoulli(x_out, generator=generator)
        images[one.name] = x_out
    del loaded

    samples = num_samples(module, cfg.eval)
    nll_in = example_nlls(module, x_in, cfg.eval)
    nll_others = {name: example_nlls(module, x_out, cfg.eval) for name, x_out in images.items()}
    areas = {name: auroc(nll_in, nll_out) for name, nll_out in nll_others.items()}
    dims = math.prod(data_shape)

    out_dir = check_output_dir(cfg.paths.output_dir)
    figure = histogram_figure(nll_in, nll_others, name_in, areas, dims, split, int(bins or 50))
    png = out_dir / "ood_nll_histograms.png"
    figure.savefig(png, dpi=100)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir / "tensorboard")) as writer:
        writer.add_figure("ood/nll_histograms", figure, close=False)
        writer.add_histogram("ood/nll_in_distribution", nll_in, 0)
        for name, nll_out in nll_others.items():
            writer.add_histogram(f"ood/nll_other/{_tag(name)}", nll_out, 0)
            writer.add_scalar(f"ood/auroc/{_tag(name)}", areas[name], 0)

    results = {
        "checkpoint": str(cfg.ckpt_path),
        "in_distribution": name_in,
        "split": split,
        "num_samples": samples,
        "in_distribution_nll": _nll_summary(nll_in, dims),
        "others": {
            one.name: {
                "data": one.data_name or _data_name(one.config),
                "transforms": list(one.transforms),
                "binarized": binarized[one.name],
                "auroc": areas[one.name],
                "nll": _nll_summary(nll_others[one.name], dims),
            } for one in sets},
        "histogram_png": str(png),
    }
    (out_dir / "ood.json").write_text(json.dumps(results, indent=2))
    for name, area in areas.items():
        log.info("AUROC %.4f (%s vs %s)", area, name_in, name)
    log.info("wrote %s", out_dir / "ood.json")
    return results


def comparison_table(results: Mapping[str, Mapping[str, Any]], digits: int = 3) -> str:
    """A markdown table of several checkpoints' ``detect_outliers`` results (or their
    ood.json), keyed by model label: one row for the in-distribution set and one per
    other set; an AUROC column per model, then a mean-NLL column (bits/dim) per model.
    A set a model was not scored on reads "–"."""
    if not results:
        raise ValueError("comparison_table needs at least one model's results")
    models = list(results)
    others: list[str] = []
    for result in results.values():
        others += [name for name in result["others"] if name not in others]
    in_names = {str(result["in_distribution"]) for result in results.values()}
    in_label = f"{in_names.pop()} (in-distribution)" if len(in_names) == 1 else "in-distribution"

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    def escape(text: str) -> str:
        return str(text).replace("|", "\\|")

    header = ["data", *(f"AUROC {escape(m)}" for m in models),
              *(f"bits/dim {escape(m)}" for m in models)]
    rows = [[escape(in_label), *("–" for _ in models),
             *(cell(results[m]["in_distribution_nll"]["bpd"]) for m in models)]]
    for name in others:
        scored = [results[m]["others"].get(name) for m in models]
        rows.append([escape(name), *(cell(s and s["auroc"]) for s in scored),
                     *(cell(s and s["nll"]["bpd"]) for s in scored)])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
