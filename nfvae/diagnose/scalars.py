"""Stalled or unstable training, read from the run's own TensorBoard scalars.

* Stalled: after the KL warm-up, the best ``val/neg_elbo`` of the last
  ``stall_epochs`` validations is not ``stall_min_delta`` nats below the best before them.
* Overfitting: over the last ``overfit_epochs`` validations, ``val/neg_elbo`` rose more
  than ``overfit_min_rise`` nats above its best while ``train/neg_elbo`` kept falling.
* Skipped steps: ``train/skipped_nonfinite`` counts batches dropped for a non-finite
  loss or gradient (``training.skip_nonfinite=true``).
"""

from __future__ import annotations

from pathlib import Path

from nfvae.diagnose.findings import Finding
from nfvae.diagnose.thresholds import Thresholds

Series = list[tuple[int, float]]
CURVES = "TensorBoard SCALARS: val/neg_elbo and train/neg_elbo"


def read_scalars(log_dir: str | Path) -> dict[str, Series]:
    """Every scalar of the event files under ``log_dir``: tag -> [(step, value)] by step,
    as TensorBoard's reader shows them (a resumed run's purged steps are dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: sorted((e.step, float(e.value)) for e in events.Scalars(tag))
            for tag in events.Tags()["scalars"]}


def stalled(val: Series, warmup_epochs: float, thresholds: Thresholds) -> list[Finding]:
    values = [v for _, v in val]
    window = thresholds.stall_epochs
    start = len(values) - window
    if start < max(1, warmup_epochs):
        return [Finding(
            check="stalled_training", severity="ok",
            summary=f"{len(values)} validation epochs: too few after the {warmup_epochs:g}-epoch "
                    f"warm-up to judge a {window}-epoch plateau",
            value=float(len(values)), threshold=float(window + max(1, warmup_epochs)),
            figure=CURVES)]
    gain = min(values[:start]) - min(values[start:])
    return [Finding(
        check="stalled_training", severity="ok" if gain >= thresholds.stall_min_delta
        else "problem",
        summary=f"val/neg_elbo improved by {gain:.3f} nats over the last {window} epochs "
                f"(best {min(values):.3f})",
        value=gain, threshold=thresholds.stall_min_delta, figure=CURVES,
        advice="check the learning rate (optimizer.lr): too low plateaus at once, too high "
               "oscillates; or stop here: the model has converged")]


def overfitting(val: Series, train: Series, thresholds: Thresholds) -> list[Finding]:
    window = thresholds.overfit_epochs
    if len(val) <= window or not train:
        return []
    values = [v for _, v in val]
    best_step, best = min(val, key=lambda p: p[1])
    rise = values[-1] - best
    train_at_best = [v for s, v in train if s <= best_step]
    train_falling = bool(train_at_best) and train[-1][1] < train_at_best[-1]
    recent_best = best_step >= val[-window][0]
    problem = rise > thresholds.overfit_min_rise and train_falling and not recent_best
    return [Finding(
        check="overfitting", severity="warning" if problem else "ok",
        summary=f"val/neg_elbo is {rise:.3f} nats above its best (step {best_step})"
                + (" while train/neg_elbo kept falling" if train_falling else ""),
        value=rise, threshold=thresholds.overfit_min_rise, figure=CURVES,
        advice="early stopping on val/neg_elbo (the best checkpoint is already the one "
               "tested), dropout or a smaller decoder, or more data (dynamic binarization)")]


def skipped_steps(skipped: Series) -> list[Finding]:
    if not skipped or skipped[-1][1] <= 0:
        return []
    return [Finding(
        check="skipped_nonfinite", severity="warning",
        summary=f"{int(skipped[-1][1])} training step(s) were skipped for a non-finite loss "
                "or gradient", value=skipped[-1][1], threshold=0.0,
        figure="TensorBoard SCALARS: train/skipped_nonfinite",
        advice="a lower learning rate or gradient clipping (trainer.gradient_clip_val)")]


def training_findings(scalars: dict[str, Series], warmup_epochs: float,
                      thresholds: Thresholds) -> list[Finding]:
    val = scalars.get("val/neg_elbo", [])
    findings = stalled(val, warmup_epochs, thresholds) if val else []
    findings += overfitting(val, scalars.get("train/neg_elbo", []), thresholds)
    findings += skipped_steps(scalars.get("train/skipped_nonfinite", []))
    return findings
