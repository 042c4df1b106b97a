"""nfvae.callbacks.budget.ComputeBudget stops training after a budget of training time,
carries the spent time through checkpoints, and the test curve (nfvae.curves) scores an
image flow through its own exact NLL: the pieces of benchmarks/study_image_flow.py,
which itself runs end to end on a tiny budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests_support import read_events

from nfvae.callbacks.budget import ComputeBudget
from nfvae.curves import read_curve
from nfvae.loading import load_module
from nfvae.training import train

ROOT = Path(__file__).resolve().parents[1]
BUDGET = ["+callbacks.budget._target_=nfvae.callbacks.budget.ComputeBudget"]


def _budget_state(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    states = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ComputeBudget")]
    assert len(states) == 1, list(checkpoint["callbacks"])
    return states[0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="clock must be one of"):
        ComputeBudget(minutes=1, clock="gpu")
    with pytest.raises(ValueError, match="minutes must be > 0"):
        ComputeBudget(minutes=0)


def test_the_budget_stops_the_run_and_a_resume_keeps_the_count(compose_cfg, tmp_path):
    """Shipped default config (digits VAE): a tiny budget stops after the first epoch
    (max_epochs stays 50); resumed with the same budget nothing more is trained; a larger
    budget continues from the checkpoint's count."""
    run = tmp_path / "run"

    def cfg(minutes, resume, clock="cpu"):
        return compose_cfg([*BUDGET, f"+callbacks.budget.minutes={minutes}",
                            f"+callbacks.budget.clock={clock}", f"ckpt_path={resume}"],
                           output_dir=run)

    assert compose_cfg([]).trainer.max_epochs > 2
    train(cfg(1e-6, "null"))
    last = run / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=False)
    assert first["epoch"] == 0  # stopped after its first epoch
    spent = _budget_state(last)["spent_seconds"]
    assert spent > 0
    steps = first["global_step"]

    train(cfg(1e-6, "last"))
    again = torch.load(last, map_location="cpu", weights_only=False)
    assert again["global_step"] == steps  # an exhausted budget trains nothing

    # Two more epochs' worth: the count continues from the checkpoint's.
    train(cfg(spent / 60 * 2.5, "last"))
    more = torch.load(last, map_location="cpu", weights_only=False)
    assert more["global_step"] > steps
    assert _budget_state(last)["spent_seconds"] > spent

    with pytest.raises(ValueError, match="counted its budget in cpu seconds"):
        train(cfg(100, "last", clock="wall"))


def test_the_curve_scores_an_image_flow_exactly(compose_cfg, tmp_path):
    """experiment=glow/digits with the curve on the whole test split: each point's
    bits/dim is the module's exact test bits/dim of those weights, recomputed here
    from the saved checkpoint through log_prob's independent dequantization draws
    averaged over many images (so the two agree to the dequantization noise)."""
    run = tmp_path / "glow"
    cfg = compose_cfg([
        "experiment=glow/digits", "trainer.max_epochs=2", "trainer.limit_train_batches=5",
        "+callbacks.test_curve._target_=nfvae.curves.NLLCurveLogger",
        "+callbacks.test_curve.every_n_epochs=1", "+callbacks.test_curve.num_examples=100000",
        "+callbacks.test_curve.num_samples=1", "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=-1"], output_dir=run)
    train(cfg)
    curve = read_curve(run / "test_curve.jsonl")
    assert [p["epoch"] for p in curve] == [1, 2]
    assert all(p["neg_elbo"] is None for p in curve)  # a flow has no bound to report
    module = load_module(run / "checkpoints" / "last.ckpt")
    from nfvae.tasks.common import build_datamodule

    x, _ = build_datamodule(module.hparams.data).split("test")
    torch.manual_seed(0)
    with torch.no_grad():
        nll = -module.log_prob(x, num_samples=1)
    bpd = float(nll.mean()) / (math.prod(x.shape[1:]) * math.log(2))
    assert curve[-1]["bpd"] == pytest.approx(bpd, abs=0.02)
    assert curve[-1]["nll"] / (math.prod(x.shape[1:]) * math.log(2)) == pytest.approx(
        curve[-1]["bpd"], rel=1e-9)
    events = read_events(run)
    assert [e.step for e in events.Scalars("zz_test_curve/bpd")] == [1, 2]
    assert "zz_test_curve/neg_elbo" not in events.Tags()["scalars"]


@pytest.mark.slow
def test_the_image_flow_study_runs_end_to_end(tmp_path):
    """benchmarks/study_image_flow.py on a seconds-long budget: every kind trains, the
    report, the figure and the sample grid are written, and the curve has its points."""
    env_script = [sys.executable, str(ROOT / "benchmarks" / "study_image_flow.py"),
                  "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out"),
                  "--minutes", "0.05", "--steps-per-point", "3", "--ood-examples", "50",
                  "--only", "glow_seed1", "realnvp_seed1", "flowvae_seed1",
                  "--override", "trainer.limit_test_batches=1", "data.eval_batch_size=50"]
    done = subprocess.run(env_script, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "study_image_flow.json").read_text())
    assert {r["name"] for r in report["runs"]} == {"glow_seed1", "realnvp_seed1",
                                                   "flowvae_seed1"}
    for run in report["runs"]:
        assert run["result"] and math.isfinite(run["result"]["test_bpd"])
        assert run["curve"] and all(math.isfinite(p["bpd"]) for p in run["curve"])
    for name in ("study_image_flow.md", "study_image_flow_bpd.png", "glow_mnist_samples.png",
                 "ood_nll_histograms_glow.png", "ood_nll_histograms_flowvae.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    ood = json.loads((tmp_path / "out" / "study_image_flow_ood.json").read_text())
    for kind in ("glow", "flowvae"):
        aurocs = [ood[kind]["others"][name]["auroc"] for name in
                  ("omniglot", "mnist:hflip", "mnist:vflip", "mnist:invert", "uniform_noise")]
        assert all(0 <= a <= 1 for a in aurocs)
    assert "| AUROC glow | AUROC flowvae |" in (tmp_path / "out" / "study_image_flow.md").read_text()
