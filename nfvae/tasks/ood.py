"""Outlier detection by likelihood: ``python eval.py task=ood ckpt_path=... task.other=omniglot``.

A VAE trained on one dataset scores images by their importance-sampled negative
log-likelihood, -log p(x) ~ -log (1/S) sum_s p(x, zK_s) / qK(zK_s|x) (Burda et al.
2016). The in-distribution test set and another dataset are scored alike; the AUROC
of "NLL separates the other dataset from the test set" summarises how well the
model's likelihood detects outliers (0.5: chance; below 0.5: the other data get
*higher* likelihood, the failure Nalisnick et al. 2019 describe). Both sets are scored
through the module's one fixed-noise NLL (``example_nll``), so the in-distribution
NLLs are those task=nll gives on the same checkpoint and examples. The two NLL
histograms go to a PNG and to TensorBoard (``ood/nll_histograms``).

The other dataset must reach the model as its training data did: the same image shape
(else this refuses), and binary if the model's test data are binary (a grey-level
set is then binarized once with a fixed seed).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nfvae.config import CONF_DIR
from nfvae.tasks.common import build_datamodule, check_output_dir, checkpoint_and_data, example_nlls

log = logging.getLogger(__name__)


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


def histogram_figure(nll_in: Tensor, nll_out: Tensor, name_in: str, name_out: str,
                     area: float, bins: int = 50) -> Figure:
    """The two NLL histograms on shared bins, as densities so unequal sizes compare."""
    figure = Figure(figsize=(7, 4), constrained_layout=True)
    ax = figure.subplots()
    both = torch.cat([nll_in, nll_out])
    edges = torch.linspace(float(both.min()), float(both.max()), bins + 1).numpy()
    ax.hist(nll_in.numpy(), bins=edges, density=True, alpha=0.6,
            label=f"{name_in} (in-distribution, n={len(nll_in)})")
    ax.hist(nll_out.numpy(), bins=edges, density=True, alpha=0.6,
            label=f"{name_out} (other, n={len(nll_out)})")
    ax.set_xlabel("negative log-likelihood (nats per image)")
    ax.set_ylabel("density")
    ax.set_title(f"NLL of test images, AUROC = {area:.3f}")
    ax.legend()
    return figure


def ood_data_config(ood_data: Any, cfg: DictConfig, overrides: Any = None) -> DictConfig:
    """The other dataset's config: a conf/data/ name, or a full config with _target_.

    A name is composed from the data group and resolved against this run's ``paths``
    and ``seed``; ``overrides`` (``task.other_data``, e.g. ``+task.other_data.binarize=static``)
    are merged on top.
    """
    if OmegaConf.is_config(ood_data) and "_target_" in ood_data:
        data = ood_data
    elif isinstance(ood_data, str):
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from hydra.errors import MissingConfigException

        def compose_group():
            return compose(config_name=None, overrides=[f"+data={ood_data}"]).data

        available = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
        try:
            if GlobalHydra.instance().is_initialized():  # inside eval.py's @hydra.main
                data = compose_group()
            else:
                with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                    data = compose_group()
        except MissingConfigException as error:
            raise ValueError(f"task.other={ood_data}: no such data config; choose one of "
                             f"{', '.join(available)}") from error
    else:
        raise ValueError("task=ood needs the other dataset: ood_data=<name of a conf/data/ "
                         "config> (the short spelling of task.other=<name>), e.g. "
                         f"ood_data=omniglot (got {ood_data!r})")
    wrapper = OmegaConf.create({
        "paths": {"data_dir": cfg.paths.data_dir},
        "seed": cfg.seed,
        "data": OmegaConf.to_container(data, resolve=False),
    })
    wrapper.data = OmegaConf.merge(wrapper.data, overrides or {})
    return OmegaConf.create(OmegaConf.to_container(wrapper, resolve=True)["data"])


def _is_binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _data_name(data_cfg: Any) -> str:
    """``nfvae.data.MNISTDataModule`` -> ``MNIST``."""
    return str(data_cfg["_target_"]).rsplit(".", 1)[-1].removesuffix("DataModule")


def _nll_summary(nll: Tensor, dims: int) -> dict[str, float | int]:
    """Count, mean, std (0 for one image) and bits per dimension of per-image NLLs."""
    mean = float(nll.mean())
    return {"n": len(nll), "mean": mean, "std": float(nll.std()) if len(nll) > 1 else 0.0,
            "bpd": mean / (dims * math.log(2))}


@torch.no_grad()
def detect_outliers(cfg: DictConfig, other: Any = None, other_data: Any = None,
                    max_examples: int | None = None, bins: int = 50) -> dict[str, Any]:
    """Score the test set and the ``other`` dataset by NLL; write ood.json, a PNG and
    TensorBoard. The arguments are conf/task/ood.yaml's options."""
    torch.manual_seed(cfg.seed)
    ood_cfg = ood_data_config(other, cfg, other_data)  # fail on a bad name before loading
    module, in_data = checkpoint_and_data(cfg)
    in_cfg = cfg.get("data") or module.hparams.get("data")
    ood_data = build_datamodule(ood_cfg)
    name_in = _data_name(in_cfg)
    name_out = str(other) if isinstance(other, str) else _data_name(ood_cfg)
    data_shape = tuple(module.hparams["data_shape"])
    if tuple(ood_data.data_shape) != data_shape:
        raise ValueError(
            f"task.other={name_out} gives images of shape {tuple(ood_data.data_shape)}, but the "
            f"model takes {data_shape}: bring the other dataset to the model's input shape "
            "(e.g. +task.other_data.image_size=28 for omniglot, or image_shape for npz) "
            "or choose one of the same shape")

    split = cfg.eval.split
    x_in = in_data.split(split)[0][:max_examples]
    x_out = ood_data.split(split)[0][:max_examples]
    binarized = False
    if _is_binary(x_in) and not _is_binary(x_out):
        # The model has only seen 0/1 pixels: draw the other set's pixels once, seeded.
        generator = torch.Generator().manual_seed(int(cfg.seed))
        x_out = torch.bernoulli(x_out, generator=generator)
        binarized = True

    num_samples = int(cfg.eval.num_samples)
    nll_in = example_nlls(module, x_in, cfg.eval)
    nll_out = example_nlls(module, x_out, cfg.eval)
    area = auroc(nll_in, nll_out)

    out_dir = check_output_dir(cfg.paths.output_dir)
    figure = histogram_figure(nll_in, nll_out, name_in, name_out, area, int(bins or 50))
    png = out_dir / "ood_nll_histograms.png"
    figure.savefig(png, dpi=100)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir / "tensorboard")) as writer:
        writer.add_figure("ood/nll_histograms", figure, close=False)
        writer.add_histogram("ood/nll_in_distribution", nll_in, 0)
        writer.add_histogram("ood/nll_other", nll_out, 0)
        writer.add_scalar("ood/auroc", area, 0)

    dims = math.prod(data_shape)
    results = {
        "checkpoint": str(cfg.ckpt_path),
        "in_distribution": name_in,
        "other": name_out,
        "split": split,
        "num_samples": num_samples,
        "other_binarized": binarized,
        "auroc": area,
        "in_distribution_nll": _nll_summary(nll_in, dims),
        "other_nll": _nll_summary(nll_out, dims),
        "histogram_png": str(png),
    }
    (out_dir / "ood.json").write_text(json.dumps(results, indent=2))
    log.info("AUROC %.4f (%s vs %s); wrote %s", area, name_in, name_out, out_dir / "ood.json")
    return results
