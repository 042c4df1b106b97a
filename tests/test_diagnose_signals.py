"""Gradient-norm spikes, early stopping inside the KL warm-up and classes missing from an
image model's samples: each failure constructed on purpose and found, each healthy
control passing (issue: diagnose from the pictures)."""

from __future__ import annotations

import re

import pytorch_lightning as pl
import torch
from torch import nn

from nfvae.data.digits import DigitsDataModule
from nfvae.diagnose import Thresholds
from nfvae.diagnose.classes import (
    ClassifierSettings,
    cache_key,
    cached_classifier,
    class_findings,
    holdout_split,
    predict,
)
from nfvae.diagnose.grad_norm import global_grad_norm
from nfvae.diagnose.report import diagnose_module
from nfvae.diagnose.scalars import (
    EarlyStoppingRecord,
    grad_norm_spikes,
    read_scalars,
    warmup_vs_early_stopping,
)
from nfvae.loading import load_module
from nfvae.tasks.common import build_datamodule
from nfvae.training import train
from tests.tests_support import read_events

QUIET = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "~callbacks.latent", "~callbacks.projector", "test.enabled=false"]


def report_of(run) -> str:
    events = read_events(run)
    return events.Tensors("diagnose/report/text_summary")[-1].tensor_proto.string_val[0].decode()


# -- gradient norm -------------------------------------------------------------------------------

def test_global_grad_norm_is_the_norm_clipping_uses():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    net(torch.randn(11, 5)).pow(2).sum().backward()
    net[0].bias.grad = None  # a parameter without a gradient is left out
    expected = nn.utils.clip_grad_norm_(net.parameters(), max_norm=float("inf"))
    assert float(global_grad_norm(net.parameters())) == float(expected) > 0


class KickDecoder(pl.Callback):
    """Before step ``at``, multiplies the decoder's weights by 30: the gradient jumps."""

    def __init__(self, at: int = 60):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                for p in pl_module.model.decoder.parameters():
                    p.mul_(30.0)


def test_grad_norm_is_logged_at_the_shipped_interval_and_a_kick_is_a_spike(compose_cfg,
                                                                          tmp_path):
    """The shipped callbacks and logging interval (20); three epochs of 23 steps. A
    decoder blown up at step 60 shows as a spike there; the same run without it does
    not."""
    healthy = tmp_path / "healthy"
    train(compose_cfg(["trainer.max_epochs=3", *QUIET], output_dir=healthy))
    grad_norm = read_scalars(healthy / "tensorboard")["train/grad_norm"]
    interval = 20
    assert [s for s, _ in grad_norm] == [s for s in range(69) if (s + 1) % interval == 0]
    assert all(v > 0 for _, v in grad_norm)

    kicked = tmp_path / "kicked"
    train(compose_cfg(["trainer.max_epochs=3", "trainer.log_every_n_steps=1", *QUIET,
                       "+callbacks.kick._target_=test_diagnose_signals.KickDecoder"],
                      output_dir=kicked))
    series = read_scalars(kicked / "tensorboard")["train/grad_norm"]
    found = grad_norm_spikes(series, Thresholds())
    assert found[0].severity == "warning" and "(steps 60" in found[0].summary, found[0]
    assert "gradient-norm spike" in report_of(kicked)

    calm = tmp_path / "calm"
    train(compose_cfg(["trainer.max_epochs=3", "trainer.log_every_n_steps=1", *QUIET],
                      output_dir=calm))
    found = grad_norm_spikes(read_scalars(calm / "tensorboard")["train/grad_norm"],
                             Thresholds())
    assert found[0].severity == "ok", found[0]


def test_spike_rule_on_series():
    steady = [(s, 1.0 + 0.1 * (s % 3)) for s in range(30)]
    assert grad_norm_spikes(steady, Thresholds())[0].severity == "ok"
    spiked = steady[:20] + [(20, 15.0)] + steady[21:]
    found = grad_norm_spikes(spiked, Thresholds())
    assert found[0].severity == "warning" and "(steps 20)" in found[0].summary
    assert found[0].value > 10
    assert grad_norm_spikes(spiked, Thresholds(grad_spike_factor=20))[0].severity == "ok"
    nonfinite = steady[:20] + [(20, float("inf"))] + steady[21:]
    assert grad_norm_spikes(nonfinite, Thresholds())[0].severity == "warning"


# -- KL warm-up against early stopping -----------------------------------------------------------

EARLY_STOP = ["+callbacks.early_stopping._target_=pytorch_lightning.callbacks.EarlyStopping",
              "+callbacks.early_stopping.monitor=val/neg_elbo",
              "+callbacks.early_stopping.patience=1",
              # no epoch counts as an improvement: the patience runs out after epoch 1
              "+callbacks.early_stopping.min_delta=1000"]


def test_early_stopping_inside_the_warmup_is_a_problem(compose_cfg, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(["trainer.max_epochs=4", "objective.warmup_epochs=10", *EARLY_STOP,
                       *QUIET], output_dir=run))
    report = report_of(run)
    assert "PROBLEM** (warmup_early_stopping)" in report, report
    assert "inside the 10-epoch KL warm-up" in report


def test_early_stopping_that_waits_for_the_warmup_passes(compose_cfg, tmp_path):
    run = tmp_path / "run"
    waits = [o.replace("pytorch_lightning.callbacks.EarlyStopping",
                       "nfvae.callbacks.WarmupEarlyStopping") for o in EARLY_STOP]
    train(compose_cfg(["trainer.max_epochs=2", "objective.warmup_epochs=1", *waits,
                       "+callbacks.early_stopping.warmup_epochs=1", *QUIET], output_dir=run))
    report = report_of(run)
    assert "ok** (warmup_early_stopping)" in report, report


def test_patience_that_began_in_the_warmup_is_a_warning():
    # best at epoch 3, patience 5 ran out at epoch 8, warm-up over at epoch 6
    record = EarlyStoppingRecord(stopped_epoch=8, wait_count=5, patience=5, last_epoch=8)
    found = warmup_vs_early_stopping(record, warmup_epochs=6)
    assert found[0].severity == "warning" and "began counting at epoch 4" in found[0].summary
    assert warmup_vs_early_stopping(record, warmup_epochs=4)[0].severity == "ok"
    patient = EarlyStoppingRecord(8, 5, 5, 8, respects_warmup=True)
    assert warmup_vs_early_stopping(patient, warmup_epochs=6)[0].severity == "ok"
    assert warmup_vs_early_stopping(None, warmup_epochs=6) == []


# -- classes of an image model's samples ---------------------------------------------------------

def test_classes_missing_from_skewed_samples_are_named(tmp_path):
    """Samples drawn from the digits with class 3 left out and class 7 ten times as
    likely: 3 missing, 7 over-represented; samples drawn evenly: no alarm."""
    train_split = DigitsDataModule().split("train")
    x, y = train_split
    generator = torch.Generator().manual_seed(1)

    def skewed(n):
        weights = torch.ones(len(x))
        weights[y == 3] = 0.0
        weights[y == 7] = 10.0
        return x[torch.multinomial(weights, n, replacement=True, generator=generator)]

    def even(n):
        return x[torch.randint(len(x), (n,), generator=generator)]

    found, ratios = class_findings(skewed, train_split, Thresholds(), cache_dir=tmp_path)
    problems = [f for f in found if f.severity == "problem"]
    warnings = [f for f in found if f.severity == "warning"]
    assert [f.summary.split(" is ")[0] for f in problems] == ["class 3"]
    assert [f.summary.split(" is ")[0] for f in warnings] == ["class 7"]
    assert ratios[3] < 0.2 < 5 < ratios[7]
    found, ratios = class_findings(even, train_split, Thresholds(), cache_dir=tmp_path)
    assert [f.severity for f in found] == ["ok"], found
    assert 0.5 < float(ratios.min()) and float(ratios.max()) < 2.0
    assert "held-out accuracy" in found[0].summary


def test_classifier_is_trained_once_per_dataset_and_cached(tmp_path):
    x, y = DigitsDataModule().split("train")
    settings = ClassifierSettings(steps=200)
    first = cached_classifier(x, y, settings, tmp_path)
    files = list((tmp_path / "classifiers").glob("*.pt"))
    assert [f.stem for f in files] == [cache_key(x, y, settings)]
    again = cached_classifier(x, y, settings, tmp_path)
    assert torch.equal(predict(first, x), predict(again, x))
    # another dataset (here: another split's images) gets its own classifier
    cached_classifier(x[:500], y[:500], settings, tmp_path)
    assert len(list((tmp_path / "classifiers").glob("*.pt"))) == 2
    (fit_x, _), (held_x, _) = holdout_split(x, y, ClassifierSettings())
    assert len(held_x) == round(0.2 * len(x)) and len(fit_x) + len(held_x) == len(x)


def test_a_vae_diagnosis_includes_the_class_histogram_of_its_samples(compose_cfg, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(["trainer.max_epochs=1", *QUIET], output_dir=run))
    module = load_module(run / "checkpoints" / "last.ckpt").eval()
    findings, scalars = diagnose_module(module, build_datamodule(module.hparams.data), None,
                                        Thresholds())
    classes = [f for f in findings if f.check == "dropped_class"]
    assert classes and "held-out accuracy" in classes[0].summary
    # one finding per kind however many classes; the scalar counts the classes
    assert sum(f.severity == "problem" for f in classes) <= 1
    problem = [f for f in classes if f.severity == "problem"]
    named = re.match(r"class(?:es)? (.+?) (?:is|are) missing", problem[0].summary
                     ).group(1).split(", ") if problem else []
    assert scalars["zz_diagnose/missing_classes"] == len(named)
