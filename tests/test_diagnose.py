"""The diagnosis checks find failures constructed on purpose, and raise no false alarm
on healthy models (issue: diagnose from the pictures)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from nfvae.diagnose import Finding, Thresholds, rank, render_markdown
from nfvae.diagnose.gaps import gap_findings, inference_gaps
from nfvae.diagnose.latent import (
    flow_contribution,
    idle_layers,
    latent_statistics,
    neg_elbo_with_and_without_flow,
    posterior_collapse,
)
from nfvae.diagnose.modes import dropped_modes, target_draws
from nfvae.diagnose.scalars import read_scalars, training_findings
from nfvae.toy.targets import U1, EightGaussians, Rings, TwoMoons
from nfvae.loading import load_module
from nfvae.tasks.common import build_datamodule
from nfvae.tasks.diagnose import diagnose
from nfvae.training import train
from nfvae.viz.latent import latent_snapshot
from tests.conftest import CONF_DIR
from tests.tests_support import read_events

QUIET = ["trainer.enable_progress_bar=false", "~callbacks.images", "~callbacks.latent",
         "~callbacks.projector", "~callbacks.progress_bar",
         "test.enabled=false"]


def checks(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


@pytest.fixture(scope="module")
def trained_planar(tmp_path_factory):
    """A digits VAE with latent size 2 and 8 planar layers, trained for 4 epochs."""
    out = tmp_path_factory.mktemp("planar")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={out}", "model.latent_dim=2", "flow.num_layers=8",
            "trainer.max_epochs=4", "seed=1", *QUIET])
    train(cfg)
    module = load_module(out / "checkpoints" / "last.ckpt").eval()
    x, labels = build_datamodule(module.hparams.data).split("val")
    return module.model, x, labels


def snapshot_stats(model, x, labels):
    return latent_statistics(latent_snapshot(model, x, labels, 16,
                                             torch.Generator().manual_seed(0)))


# -- posterior collapse ---------------------------------------------------------------

def test_collapsed_posterior_is_reported_and_a_trained_one_is_not(trained_planar):
    model, x, labels = trained_planar
    healthy = posterior_collapse(snapshot_stats(model, x, labels), Thresholds())
    assert healthy[0].severity == "ok", healthy[0].summary
    assert healthy[0].summary.split(" of 2 latent dimensions carry information")[0] in "12"
    # q0(z|x) = N(0, I) for every x: the posterior ignores the data.
    with torch.no_grad():
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for layer in (model.to_mu, model.to_log_sigma):
            layer.weight.zero_()
            layer.bias.zero_()
        for layer in model.flow.layers:
            layer.params.head.weight.zero_()  # the flow's context could still carry x
    try:
        collapsed = posterior_collapse(snapshot_stats(model, x, labels), Thresholds())
    finally:
        model.load_state_dict(saved)
    assert collapsed[0].severity == "problem"
    assert collapsed[0].summary.startswith("0 of 2 latent dimensions carry information")


# -- idle layers and the flow's contribution ----------------------------------------------

def test_zeroed_amortized_head_is_an_idle_layer_and_trained_layers_are_not(trained_planar):
    model, x, labels = trained_planar
    healthy = idle_layers(snapshot_stats(model, x, labels), Thresholds())
    assert [f.severity for f in healthy] == ["ok"], [f.summary for f in healthy]
    with torch.no_grad():
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        head = model.flow.layers[2].params.head
        head.weight.zero_()
        head.bias.zero_()  # u = w = b = 0: the layer is the identity for every x
    try:
        findings = idle_layers(snapshot_stats(model, x, labels), Thresholds())
    finally:
        model.load_state_dict(saved)
    idle = [f for f in findings if f.severity == "warning"]
    assert len(idle) == 1 and idle[0].summary.startswith("flow layer 3 of 8")


def test_flow_contribution_compares_the_bound_with_the_flow_removed(trained_planar):
    model, x, _ = trained_planar
    with_flow, without = neg_elbo_with_and_without_flow(model, x)
    assert with_flow != without
    finding = flow_contribution(with_flow, without, 8, Thresholds())[0]
    assert finding.value == pytest.approx(without - with_flow)
    assert finding.severity == ("ok" if without - with_flow >= 0.1 else "warning")
    # A flow of identity layers buys exactly nothing.
    with torch.no_grad():
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for layer in model.flow.layers:
            layer.params.head.weight.zero_()
            layer.params.head.bias.zero_()
    try:
        with_flow, without = neg_elbo_with_and_without_flow(model, x)
    finally:
        model.load_state_dict(saved)
    assert with_flow == pytest.approx(without, abs=1e-5)
    assert flow_contribution(with_flow, without, 8, Thresholds())[0].severity == "warning"


# -- dropped modes --------------------------------------------------------------------------

@pytest.mark.parametrize("target", [EightGaussians(), Rings(), TwoMoons(), U1()],
                         ids=lambda t: t.name)
def test_removed_mode_is_named_and_the_full_target_passes(target):
    samples = target_draws(target, 20000, torch.Generator().manual_seed(5))
    full = dropped_modes(target, samples, Thresholds())
    assert [f.severity for f in full] == ["ok"], [f.summary for f in full]
    missing = target.mode_names[-1]
    kept = samples[target.mode_of(samples) != len(target.mode_names) - 1]
    findings = dropped_modes(target, kept, Thresholds())
    problems = [f for f in findings if f.severity == "problem"]
    assert len(problems) == 1 and missing in problems[0].summary
    assert problems[0].value == pytest.approx(0.0)


# -- stalled training, from real event files ------------------------------------------------

def test_flat_learning_rate_run_is_reported_stalled_and_a_learning_one_is_not(compose_cfg,
                                                                           tmp_path):
    thresholds = Thresholds(stall_epochs=3, stall_min_delta=0.1)
    common = ["trainer.max_epochs=6", "trainer.limit_train_batches=4",
              "objective.warmup_epochs=0", *QUIET]
    train(compose_cfg(["optimizer.lr=1e-9", *common], output_dir=tmp_path / "flat"))
    flat = training_findings(read_scalars(tmp_path / "flat" / "tensorboard"), 0, thresholds)
    assert checks(flat, "stalled_training")[0].severity == "problem"
    train(compose_cfg(["optimizer.lr=3e-3", *common], output_dir=tmp_path / "learning"))
    learning = training_findings(read_scalars(tmp_path / "learning" / "tensorboard"), 0,
                                 thresholds)
    assert checks(learning, "stalled_training")[0].severity == "ok"


def test_warmup_epochs_are_not_judged():
    series = [(k, 100.0) for k in range(12)]
    finding = training_findings({"val/neg_elbo": series}, 10, Thresholds(stall_epochs=3))[0]
    assert finding.severity == "ok" and "too few" in finding.summary


def test_overfitting_and_skipped_steps_from_series():
    val = [(k, v) for k, v in enumerate([100, 95, 92, 91, 92, 93, 94, 95, 96])]
    train_curve = [(k, 100.0 - 2 * k) for k in range(9)]
    findings = training_findings({"val/neg_elbo": val, "train/neg_elbo": train_curve,
                                  "train/skipped_nonfinite": [(3, 0.0), (8, 2.0)]}, 0,
                                 Thresholds(stall_epochs=3))
    assert checks(findings, "overfitting")[0].severity == "warning"
    assert checks(findings, "skipped_nonfinite")[0].summary.startswith("2 training step(s)")
    improving = [(k, 100.0 - k) for k in range(9)]
    findings = training_findings({"val/neg_elbo": improving, "train/neg_elbo": train_curve},
                                 0, Thresholds(stall_epochs=3))
    assert [f.severity for f in findings] == ["ok", "ok"]


# -- the report -----------------------------------------------------------------------------

def test_report_ranks_problems_first_and_thresholds_are_configurable():
    ok = Finding("a", "ok", "fine", 1.0, 0.5)
    problem = Finding("b", "problem", "broken", 0.0, 0.5, figure="fig", advice="fix it")
    assert rank([ok, problem]) == [problem, ok]
    text = render_markdown([ok, problem])
    assert text.index("broken") < text.index("fine") and "try: fix it" in text
    assert Thresholds.from_config({"stall_epochs": 4}).stall_epochs == 4
    with pytest.raises(ValueError, match="unknown diagnose option.*'stall'"):
        Thresholds.from_config({"stall": 4})
    with pytest.raises(ValueError, match="severity"):
        Finding("c", "bad", "", 0.0, 0.0)


# -- inference gaps (opt-in) ------------------------------------------------------------------

def test_gaps_order_the_bounds_and_a_spoiled_encoder_shows_as_amortization_gap(trained_planar):
    model, x, _ = trained_planar
    x = x[:16]
    gaps = inference_gaps(model, x, steps=150, is_samples=500)
    # Optimising q per example cannot lose to the encoder (same noise), and the
    # importance-sampled NLL is a tighter bound than either ELBO.
    assert gaps.neg_elbo_optimized <= gaps.neg_elbo_amortized + 1e-3
    assert gaps.nll <= gaps.neg_elbo_optimized + 1e-3
    with torch.no_grad():
        saved = model.to_mu.bias.clone()
        model.to_mu.bias.add_(3.0)  # every posterior mean 3 units off
    try:
        spoiled = inference_gaps(model, x, steps=150, is_samples=500)
    finally:
        with torch.no_grad():
            model.to_mu.bias.copy_(saved)
    assert spoiled.amortization > gaps.amortization + 1.0
    assert "the amortization gap is larger" in gap_findings(spoiled)[0].summary
    assert all(p.requires_grad for p in model.parameters())


# -- the end-of-training report -----------------------------------------------------------------

def test_end_of_training_report_is_a_text_card_with_scalars(compose_cfg, tmp_path):
    out = tmp_path / "run"
    cfg = compose_cfg(["trainer.max_epochs=2", "test.enabled=false"],
                      output_dir=out)  # the shipped callbacks, figures included
    train(cfg)
    events = read_events(out)
    assert "zz_diagnose/active_units_zK" in events.Tags()["scalars"]
    report = events.Tensors("diagnose/report/text_summary")
    text = report[-1].tensor_proto.string_val[0].decode()
    assert "latent dimensions carry information" in text
    assert text.index("## Diagnosis") == 0
    # Every figure the report points at is one the run logged.
    logged = {tag for kind in ("images", "histograms", "scalars")
              for tag in events.Tags()[kind]}
    pointed = re.findall(r"(?:IMAGES|HISTOGRAMS|SCALARS): ([^;\n]+)", text)
    names = {name.strip() for group in pointed
             for name in re.split(r" and |, ", group) if "/" in name}
    assert names and names <= logged, names - logged


def test_eval_task_diagnoses_a_barely_trained_toy_checkpoint_as_diffuse(compose_cfg, tmp_path):
    """A maximum-likelihood flow trained for three steps on eight Gaussians is still a
    broad blob: it drops no mode, but half its mass lies off the target."""
    out = tmp_path / "toy"
    train(compose_cfg(["experiment=toy/eight_gaussians", "flow=spline", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false",
                       "~callbacks.progress_bar", "~callbacks.density", "test.enabled=false"],
                      output_dir=out))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["task=diagnose", f"ckpt_path={out}/checkpoints/last.ckpt",
                                         f"paths.output_dir={tmp_path / 'eval'}"])
    results = diagnose(cfg)
    diffuse = [f for f in results["findings"] if f["check"] == "mass_off_target"]
    assert len(diffuse) == 1 and diffuse[0]["severity"] == "warning"
    assert diffuse[0]["value"] > 0.3
    saved = json.loads((tmp_path / "eval" / "diagnose.json").read_text())
    assert saved["findings"] == results["findings"]
    assert (tmp_path / "eval" / "diagnose.md").read_text().startswith("## Diagnosis of")
