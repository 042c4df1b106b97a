"""One diagnosis per kind of model, and the callback that logs it at the end of training.

``diagnose_module(module, datamodule, events_dir)`` runs every check that applies to the
module's kind (flow-VAE: collapse, idle layers, the flow's contribution, optionally the
inference gaps, the class histogram of its samples; image density model: the class
histogram; 2-D density: dropped modes) plus the checks of the run's own scalars (and,
from the end-of-training callback, of its early stopping against the KL warm-up),
and returns the findings ranked. ``Diagnosis`` logs them when training ends, as the
TensorBoard text card ``diagnose/report`` and ``zz_diagnose/*`` scalars: single points
at the last step, in a group that sorts after ``train`` and ``val`` so the scalar pages
still open on the curves (``nfvae.tb_logger``).
"""

from __future__ import annotations

import logging
from functools import singledispatch
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from nfvae.diagnose.classes import class_findings
from nfvae.diagnose.findings import Finding, rank, render_markdown
from nfvae.diagnose.gaps import gap_findings, inference_gaps
from nfvae.diagnose.latent import (
    flow_contribution,
    idle_layers,
    latent_statistics,
    neg_elbo_with_and_without_flow,
    posterior_collapse,
)
from nfvae.diagnose.modes import dropped_modes
from nfvae.diagnose.scalars import (
    EarlyStoppingRecord,
    read_scalars,
    training_findings,
    warmup_vs_early_stopping,
)
from nfvae.diagnose.thresholds import Thresholds
from nfvae.image_flow.module import FlowDensityModule
from nfvae.module import FlowVAEModule
from nfvae.toy.module import ToyDensityModule
from nfvae.viz.latent import latent_snapshot

log = logging.getLogger(__name__)


@torch.no_grad()
def vae_findings(module, x, labels, thresholds: Thresholds, max_points: int = 500,
                 gaps: bool = False) -> tuple[list[Finding], dict[str, float]]:
    model = module.model
    x, labels = x[:max_points].to(module.device), labels[:max_points]
    stats = latent_statistics(latent_snapshot(model, x, labels, 16,
                                              torch.Generator().manual_seed(0)))
    with_flow, without = neg_elbo_with_and_without_flow(model, x)
    num_layers = len(model.flow)
    findings = (posterior_collapse(stats, thresholds) + idle_layers(stats, thresholds)
                + flow_contribution(with_flow, without, num_layers, thresholds))
    scalars = {
        "zz_diagnose/active_units_zK": float((stats.active_zK > thresholds.active_unit).sum()),
        "zz_diagnose/active_units_z0": float((stats.active_z0 > thresholds.active_unit).sum()),
        "zz_diagnose/flow_gain_nats": without - with_flow,
    }
    if gaps:
        with torch.enable_grad():
            measured = inference_gaps(model, x[:32])
        findings += gap_findings(measured)
        scalars["zz_diagnose/amortization_gap"] = measured.amortization
        scalars["zz_diagnose/approximation_gap"] = measured.approximation
    return findings, scalars


@torch.no_grad()
def density_findings(module, thresholds: Thresholds, num_samples: int = 20000
                     ) -> tuple[list[Finding], dict[str, float]]:
    samples = module.sample(num_samples, torch.Generator().manual_seed(0)).cpu()
    findings = dropped_modes(module.target, samples, thresholds)
    dropped = sum(f.check == "dropped_mode" and f.severity == "problem" for f in findings)
    return findings, {"zz_diagnose/dropped_modes": float(dropped)}


def has_classes(labels) -> bool:
    """Integer labels of at least two classes (Frey Faces has none)."""
    return (labels is not None and not torch.is_floating_point(labels)
            and len(torch.unique(labels)) >= 2)


def sample_class_findings(sample, datamodule, thresholds: Thresholds,
                          figure: str = "TensorBoard IMAGES: viz/images/samples"
                          ) -> tuple[list[Finding], dict[str, float]]:
    """The class histogram of ``sample(n)``'s images against the data's (image models
    with labelled data; ``nfvae.diagnose.classes``)."""
    train = datamodule.split("train")
    if thresholds.class_samples <= 0 or not has_classes(train[1]):
        return [], {}
    with torch.random.fork_rng():  # the same samples every time, the run's RNG untouched
        torch.manual_seed(0)
        findings, ratios = class_findings(lambda n: sample(n).cpu(), train, thresholds,
                                          num_samples=thresholds.class_samples, figure=figure)
    missing = int((ratios < thresholds.class_mass_fraction).sum())
    return findings, {"zz_diagnose/missing_classes": float(missing)}


@singledispatch
def model_findings(module: pl.LightningModule, datamodule, thresholds: Thresholds,
                   gaps: bool = False) -> tuple[list[Finding], dict[str, float], float]:
    """(findings, scalars, KL warm-up in epochs) of the checks for ``module``'s kind.

    A kind without checks of its own registers none and still gets those of its
    run's scalars."""
    return [], {}, 0.0


@model_findings.register
def _(module: ToyDensityModule, datamodule, thresholds: Thresholds, gaps: bool = False):
    return (*density_findings(module, thresholds), 0.0)


@model_findings.register
def _(module: FlowVAEModule, datamodule, thresholds: Thresholds, gaps: bool = False):
    x, labels = datamodule.split("val")
    findings, scalars = vae_findings(module, x, labels, thresholds, gaps=gaps)
    more, numbers = sample_class_findings(module.model.sample, datamodule, thresholds)
    return findings + more, {**scalars, **numbers}, float(getattr(module, "warmup_epochs", 0.0))


@model_findings.register
def _(module: FlowDensityModule, datamodule, thresholds: Thresholds, gaps: bool = False):
    # ImageFlowLogger's grid at temperature 1
    findings, scalars = sample_class_findings(
        module.sample, datamodule, thresholds, "TensorBoard IMAGES: viz/samples/T_1")
    return findings, scalars, 0.0


def diagnose_module(module, datamodule, events_dir: str | Path | None,
                    thresholds: Thresholds, gaps: bool = False,
                    early_stopping: EarlyStoppingRecord | None = None
                    ) -> tuple[list[Finding], dict[str, float]]:
    """Every check that applies to ``module``'s kind, and those of its run's scalars
    (and of its early stopping, when the caller saw it: ``early_stopping_record``)."""
    findings, scalars, warmup = model_findings(module, datamodule, thresholds, gaps)
    if events_dir is not None and Path(events_dir).is_dir():
        findings += training_findings(read_scalars(events_dir), warmup, thresholds)
    findings += warmup_vs_early_stopping(early_stopping, warmup)
    return rank(findings), scalars


def early_stopping_record(trainer: pl.Trainer) -> EarlyStoppingRecord | None:
    """What the trainer's (first) early-stopping callback did, if it has one."""
    from nfvae.callbacks import WarmupEarlyStopping

    callbacks = trainer.early_stopping_callbacks
    if not callbacks:
        return None
    stopper = callbacks[0]
    # Lightning records the epoch it stopped at, 0 meaning "did not stop".
    stopped = trainer.current_epoch if stopper.stopped_epoch > 0 else None
    return EarlyStoppingRecord(
        stopped_epoch=stopped, wait_count=int(stopper.wait_count),
        patience=int(stopper.patience), last_epoch=trainer.current_epoch,
        respects_warmup=isinstance(stopper, WarmupEarlyStopping),
        monitor=str(stopper.monitor))


class Diagnosis(pl.Callback):
    """At the end of fitting, on rank 0: the diagnosis as ``diagnose/report`` (text) and
    ``zz_diagnose/*`` scalars at the last step, and in the run's log."""

    def __init__(self, thresholds: dict | None = None, gaps: bool = False):
        super().__init__()
        self.gaps = gaps
        self.thresholds = Thresholds.from_config(
            OmegaConf.to_container(thresholds) if isinstance(thresholds, DictConfig)
            else thresholds)

    @pl.utilities.rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.logger is None:
            return
        experiment = trainer.logger.experiment
        experiment.flush()
        was_training = pl_module.training
        pl_module.eval()
        try:
            findings, scalars = diagnose_module(
                pl_module, trainer.datamodule, trainer.logger.log_dir, self.thresholds,
                self.gaps, early_stopping_record(trainer))
        finally:
            pl_module.train(was_training)
        text = render_markdown(findings)
        step = trainer.global_step
        experiment.add_text("diagnose/report", text, step)
        for tag, value in scalars.items():
            experiment.add_scalar(tag, value, step)
        experiment.flush()
        log.info("%s", text)
