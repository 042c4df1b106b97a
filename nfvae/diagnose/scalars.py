"""Stalled or unstable training, read from the run's own TensorBoard scalars.

* Stalled: after the KL warm-up, the best ``val/neg_elbo`` of the last
  ``stall_epochs`` validations is not ``stall_min_delta`` nats below the best before them.
* Overfitting: over the last ``overfit_epochs`` validations, ``val/neg_elbo`` rose more
  than ``overfit_min_rise`` nats above its best while ``train/neg_elbo`` kept falling.
* Skipped steps: ``train/skipped_nonfinite`` counts batches dropped for a non-finite
  loss or gradient (``training.skip_nonfinite=true``).
* Gradient-norm spikes: a logged ``train/grad_norm`` more than ``grad_spike_factor``
  times the median of the ``grad_spike_window`` values logged before it (or not finite).
* Warm-up against early stopping: early stopping that stopped the run inside the KL
  warm-up, or whose patience started counting before the warm-up ended (epochs where
  beta < 1, so the monitored -ELBO was not yet the objective's).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
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


def grad_norm_spikes(grad_norm: Series, thresholds: Thresholds) -> list[Finding]:
    window, factor = thresholds.grad_spike_window, thresholds.grad_spike_factor
    if len(grad_norm) <= 3:
        return []  # too few logged steps to have a typical size to compare with
    spikes, worst_ratio, worst_step = [], 0.0, grad_norm[0][0]
    for i in range(3, len(grad_norm)):
        step, value = grad_norm[i]
        before = [v for _, v in grad_norm[max(0, i - window):i] if math.isfinite(v)]
        if not before:
            continue
        typical = statistics.median(before)
        finite = math.isfinite(value)
        ratio = value / typical if finite and typical > 0 else math.inf
        if ratio > factor:
            spikes.append(step)
        if ratio > worst_ratio:
            worst_ratio, worst_step = ratio, step
    figure = "TensorBoard SCALARS: train/grad_norm"
    if not spikes:
        return [Finding(
            check="grad_norm_spikes", severity="ok",
            summary=f"no gradient-norm spike in {len(grad_norm)} logged steps (largest "
                    f"{worst_ratio:.3g} times the median of the {window} before it, at "
                    f"step {worst_step})", value=worst_ratio, threshold=factor,
            figure=figure)]
    shown = ", ".join(str(s) for s in spikes[:5]) + (" ..." if len(spikes) > 5 else "")
    return [Finding(
        check="grad_norm_spikes", severity="warning",
        summary=f"{len(spikes)} gradient-norm spike(s) in {len(grad_norm)} logged steps "
                f"(steps {shown}); the largest is {worst_ratio:.3g} times the median of "
                f"the {window} logged before it (step {worst_step})",
        value=worst_ratio, threshold=factor, figure=figure,
        advice="gradient clipping (trainer.gradient_clip_val), a lower learning rate "
               "(optimizer.lr), or a longer KL warm-up; spikes early in training often "
               "come from a flow layer near non-invertibility")]


@dataclass(frozen=True)
class EarlyStoppingRecord:
    """What an early-stopping callback did: the epoch it stopped at (None: it did not
    stop the run), how many epochs it had waited without improvement at the end, its
    patience, and whether its patience skips the warm-up (``WarmupEarlyStopping``)."""

    stopped_epoch: int | None
    wait_count: int
    patience: int
    last_epoch: int
    respects_warmup: bool = False
    monitor: str = "val/neg_elbo"


def warmup_vs_early_stopping(record: EarlyStoppingRecord | None,
                             warmup_epochs: float) -> list[Finding]:
    """Epochs are 0-based; beta reaches 1 at epoch ``warmup_epochs``."""
    if record is None or warmup_epochs <= 0:
        return []
    figure = "TensorBoard SCALARS: train/beta and " + record.monitor
    advice = ("early stopping that counts only after the warm-up "
              "(nfvae.callbacks.WarmupEarlyStopping, as experiment=sylvester/* uses), a "
              "larger patience, or a shorter warm-up (objective.warmup_epochs)")
    if record.stopped_epoch is not None and record.stopped_epoch < warmup_epochs:
        return [Finding(
            check="warmup_early_stopping", severity="problem",
            summary=f"early stopping on {record.monitor} stopped the run at epoch "
                    f"{record.stopped_epoch}, inside the {warmup_epochs:g}-epoch KL warm-up "
                    "(beta < 1): the model never trained on the full ELBO",
            value=float(record.stopped_epoch), threshold=float(warmup_epochs),
            figure=figure, advice=advice)]
    # Patience counted epochs best + 1 .. last; the first of them is where it began.
    began = record.last_epoch - record.wait_count + 1
    if (record.stopped_epoch is not None and not record.respects_warmup
            and began < warmup_epochs):
        return [Finding(
            check="warmup_early_stopping", severity="warning",
            summary=f"early stopping began counting at epoch {began} (its last "
                    f"improvement of {record.monitor}), before the KL warm-up ended at "
                    f"epoch {warmup_epochs:g}, and stopped the run at epoch "
                    f"{record.stopped_epoch}: part of its patience ran while beta < 1",
            value=float(began), threshold=float(warmup_epochs), figure=figure,
            advice=advice)]
    state = (f"stopped the run at epoch {record.stopped_epoch}"
             if record.stopped_epoch is not None else "did not stop the run")
    return [Finding(
        check="warmup_early_stopping", severity="ok",
        summary=f"early stopping {state}; its patience counted from epoch {max(began, 0)}, "
                f"the KL warm-up ended at epoch {warmup_epochs:g}"
                + (" (its patience skips the warm-up)" if record.respects_warmup else ""),
        value=float(began), threshold=float(warmup_epochs), figure=figure)]


def training_findings(scalars: dict[str, Series], warmup_epochs: float,
                      thresholds: Thresholds) -> list[Finding]:
    val = scalars.get("val/neg_elbo", [])
    findings = stalled(val, warmup_epochs, thresholds) if val else []
    findings += overfitting(val, scalars.get("train/neg_elbo", []), thresholds)
    findings += skipped_steps(scalars.get("train/skipped_nonfinite", []))
    findings += grad_norm_spikes(scalars.get("train/grad_norm", []), thresholds)
    return findings
