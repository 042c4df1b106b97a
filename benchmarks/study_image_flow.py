"""The image-flow budget study: Glow and RealNVP on grey-level MNIST for a fixed budget
of training compute each, test bits/dim against training time, seeds 1 and 2; a
flow-VAE on the same data under the same budget; outlier detection by both kinds of
model on the same other data; a 5x5 sample grid from the Glow checkpoint.

Every run is a plain ``train.py`` run (``experiment=glow/mnist``, ``realnvp/mnist``, or
the flow-VAE's overrides in ``FLOW_VAE``) with the study's overrides
(``study_overrides``): an "epoch" is ``--steps-per-point`` training batches (so that
the curve gets a point every few minutes; MNIST's 860 batches of 64 take ~an hour on
one core), validation on 1000 images and a curve point (``nfvae.curves``: 1000 test
images, exact bits/dim for the flows, 100 importance samples for the VAE, fixed
noise) after each, figures every 5th, and ``nfvae.callbacks.budget.ComputeBudget``
stopping training after ``--minutes`` of training CPU time (one thread: the budget
buys the same training on a quiet or a busy machine; the wall time is reported too).
After training, each run's test runs on all 10,000 test images.

The driver runs the runs one after another in ``ORDER``, each in its own folder under
``--runs-dir`` (outside the repository); a run with checkpoints resumes from
``ckpt_path=last`` (kill it at any time; a larger ``--minutes`` later continues the
same runs). It writes ``benchmarks/results/study_image_flow.{md,json}``, the figure
``study_image_flow_bpd.png`` (bits/dim against training CPU-minutes, a line per
model, a band over seeds), ``glow_mnist_samples.png`` and the OOD table.

    .venv/bin/python benchmarks/study_image_flow.py --background   # detached; <runs-dir>/driver.log
    .venv/bin/python benchmarks/study_image_flow.py --only glow_seed1 --minutes 45
    .venv/bin/python benchmarks/study_image_flow.py --report       # tables, figures, OOD
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's nfvae, whatever is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_support import (  # noqa: E402
    RESULT_FILE,
    background,
    has_checkpoints,
    hold_lock,
    last_checkpoint,
    mean_std,
    plot_over_seeds,
    read_curve,
    read_result,
    run_name,
)

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES_PNG = "glow_mnist_samples.png"
DEFAULT_RUNS_DIR = Path(os.environ.get("NFVAE_IMAGE_FLOW_DIR",
                                       ROOT.parent / "runs" / "image_flow"))
KINDS = ["glow", "glow_clamped", "realnvp", "flowvae"]
# Seed 1 of each kind first (the OOD comparison needs glow and flowvae), then seed 2.
ORDER = [("glow", 1), ("realnvp", 1), ("flowvae", 1), ("glow_clamped", 1), ("glow", 2),
         ("realnvp", 2), ("flowvae", 2), ("glow_clamped", 2)]
# The flow-VAE on the same grey-level data: MLP 784-300-300, latent 32, 4 amortized
# IAF layers, discretized logistic likelihood over the 256 levels, so its bits/dim
# and NLLs compare with the flows' (both are -log P of the 8-bit images).
FLOW_VAE = ["data=mnist", "data.binarize=none", "model=mlp",
            "model/likelihood=discretized_logistic", "model.latent_dim=32",
            "model.encoder.hidden_dims=[300,300]", "model.decoder.hidden_dims=[300,300]",
            "flow=iaf", "data.batch_size=64", "data.eval_batch_size=500",
            "objective.warmup_epochs=0", "test.num_samples=100"]
# What each kind trains. glow and realnvp keep Glow's unbounded split and top priors
# (module.prior_max_log_scale=null), as the study began before the shipped soft clamp
# existed, so that every seed (and any resume of one) trains the same model;
# glow_clamped is experiment=glow/mnist exactly as shipped, with the clamp (glow_seed2's
# test curve went to inf bits/dim at step 1200 through the unbounded prior).
MODELS = {
    "glow": ["experiment=glow/mnist", "module.prior_max_log_scale=null"],
    "glow_clamped": ["experiment=glow/mnist"],
    "realnvp": ["experiment=realnvp/mnist", "module.prior_max_log_scale=null"],
    "flowvae": FLOW_VAE,
}
# Quoted, not reproduced here: test bits/dim on MNIST after long GPU training, as
# tabulated by Grathwohl et al. (2019, FFJORD, Table 2).
PUBLISHED = {"realnvp": 1.06, "glow": 1.05, "glow_clamped": 1.05}
PUBLISHED_SOURCE = "Grathwohl et al. 2019 (FFJORD), Table 2, MNIST (quoted)"
# Training batches between curve points (one "epoch"): ~2-3 CPU-minutes for either
# kind (Glow ~0.85 s per batch of 64 on one core, the MLP flow-VAE ~0.02 s), so each
# curve has ~15-20 points and validation plus scoring stays under a tenth of the time.
STEPS_PER_POINT = {"glow": 150, "glow_clamped": 150, "realnvp": 150, "flowvae": 6000}
OOD_OTHERS = ["omniglot", "mnist:hflip", "mnist:vflip", "mnist:invert", "uniform_noise"]


def study_overrides(kind: str, minutes: float, steps_per_point: int | None = None
                    ) -> list[str]:
    curve_samples = 100 if kind == "flowvae" else 1
    return [
        *MODELS[kind],
        "trainer.max_epochs=100000",  # the budget stops the run
        "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
        # A batch with a non-finite loss is skipped and counted (train/skipped_nonfinite),
        # not fatal: glow_seed1 met one at step 2044 (an outlier image whose level-2
        # latent reached 1.6e32 through the unbounded split-prior scale; see the README).
        "training.skip_nonfinite=true",
        f"trainer.limit_train_batches={steps_per_point or STEPS_PER_POINT[kind]}",
        "trainer.limit_val_batches=2",
        "callbacks.images.every_n_epochs=5",
        "+callbacks.budget._target_=nfvae.callbacks.budget.ComputeBudget",
        f"+callbacks.budget.minutes={minutes}",
        "+callbacks.test_curve._target_=nfvae.curves.NLLCurveLogger",
        "+callbacks.test_curve.every_n_epochs=1",
        "+callbacks.test_curve.num_examples=1000",
        f"+callbacks.test_curve.num_samples={curve_samples}",
        "+callbacks.test_curve.batch_size=250",
    ]


def overrides(kind: str, seed: int, run_dir: Path, data_dir: Path, minutes: float,
              steps_per_point: int | None, extra: list[str] = ()) -> list[str]:
    resume = "last" if has_checkpoints(run_dir) else "null"
    return [*study_overrides(kind, minutes, steps_per_point), f"seed={seed}",
            f"paths.output_dir={run_dir}", f"data.data_dir={data_dir}", "data.download=false",
            f"ckpt_path={resume}", *extra]


def is_finished(run_dir: Path, minutes: float) -> bool:
    result = read_result(run_dir)
    return bool(result) and float(result.get("minutes", 0)) >= minutes


def train_one(kind: str, seed: int, run_dir: Path, data_dir: Path, minutes: float,
              steps_per_point: int | None, extra: list[str] = ()) -> dict:
    from common import compose

    from nfvae.training import train

    run_dir.mkdir(parents=True, exist_ok=True)
    args = overrides(kind, seed, run_dir, data_dir, minutes, steps_per_point, extra)
    print(f"[{time.strftime('%F %T')}] {run_name(kind, seed)}: {' '.join(args)}", flush=True)
    started, cpu_started = time.time(), time.process_time()
    metrics = train(compose(args))
    result = {"kind": kind, "seed": seed, "minutes": minutes,
              "test_bpd": metrics.get("test/bpd"), "test_nll": metrics.get("test/nll"),
              "session_seconds": time.time() - started,
              "session_cpu_seconds": time.process_time() - cpu_started,
              "finished_at": time.strftime("%F %T")}
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    print(f"[{time.strftime('%F %T')}] {run_name(kind, seed)} done: {result}", flush=True)
    return result


# -- after training ----------------------------------------------------------------------
def checkpoint(run_dir: Path) -> Path | None:
    return last_checkpoint(run_dir)


def draw_samples(run_dir: Path, path: Path, temperature: float = 0.7, seed: int = 0) -> bool:
    """A 5x5 grid of ``temperature`` samples from the run's last checkpoint."""
    import torch
    from torchvision.utils import save_image

    from nfvae.loading import load_module

    ckpt = checkpoint(run_dir)
    if ckpt is None:
        return False
    module = load_module(ckpt)
    torch.manual_seed(seed)
    with torch.no_grad():
        images = module.sample(25, temperature=temperature).clamp(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=5, padding=2, pad_value=1.0)
    return True


def detect_outliers(runs_dir: Path, data_dir: Path, max_examples: int,
                    results_dir: Path = RESULTS) -> dict | None:
    """Glow (seed 1) and the flow-VAE (seed 1), trained on the same MNIST, scored on
    the same other data: per model, ``nfvae.tasks.ood.detect_outliers``'s results."""
    from common import compose

    from nfvae.tasks.ood import detect_outliers as score

    models = {"glow": runs_dir / run_name("glow", 1), "flowvae": runs_dir / run_name("flowvae", 1)}
    if any(checkpoint(d) is None or read_result(d) is None for d in models.values()):
        return None
    clamped = runs_dir / run_name("glow_clamped", 1)
    if checkpoint(clamped) is not None and read_result(clamped) is not None:
        models = {"glow": models["glow"], "glow_clamped": clamped, "flowvae": models["flowvae"]}
    results = {}
    results_dir.mkdir(parents=True, exist_ok=True)
    for kind, run_dir in models.items():
        samples = 1 if kind != "flowvae" else 100
        cfg = compose([f"ckpt_path={checkpoint(run_dir)}", f"paths.output_dir={run_dir / 'ood'}",
                       f"paths.data_dir={data_dir}", f"eval.num_samples={samples}",
                       "eval.batch_size=250", "task=ood"], config_name="eval")
        results[kind] = score(cfg, other=OOD_OTHERS, max_examples=max_examples)
        histograms = results_dir / f"ood_nll_histograms_{kind}.png"
        shutil.copyfile(results[kind]["histogram_png"], histograms)
        results[kind]["histogram_png"] = str(histograms.relative_to(results_dir))
    return results


# -- the report --------------------------------------------------------------------------
def collect(runs_dir: Path) -> list[dict]:
    runs = []
    for kind, seed in ORDER:
        run_dir = runs_dir / run_name(kind, seed)
        if run_dir.is_dir():
            curve = read_curve(run_dir)
            runs.append({"name": run_name(kind, seed), "kind": kind, "seed": seed,
                         "folder": str(run_dir), "result": read_result(run_dir),
                         "curve": curve})
    return runs


def draw_curves(runs: list[dict], path: Path) -> None:
    """Test-subset bits/dim against training CPU-minutes: per kind the mean over seeds
    at each point the seeds share, and a band from their min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in KINDS:
        curves = [r["curve"] for r in runs if r["kind"] == kind and r["curve"]]
        if curves:
            plot_over_seeds(ax, curves, "train_cpu_seconds", 60, "bpd", kind, marker=".")
    ax.axhline(PUBLISHED["glow"], color="k", ls="--", lw=0.8,
               label=f"Glow, long GPU training: {PUBLISHED['glow']} (quoted)")
    ax.set_xlabel("training CPU-minutes (one thread)")
    ax.set_ylabel("test bits/dim (1000 images)")
    ax.set_title("Grey-level MNIST: bits/dim against training compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(runs_dir: Path, minutes: float, ood: dict | None = None,
                 results_dir: Path = RESULTS) -> None:
    runs = collect(runs_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    ood_path = results_dir / "study_image_flow_ood.json"
    if ood is not None:
        ood_path.write_text(json.dumps(ood, indent=2))
    elif ood_path.is_file():
        ood = json.loads(ood_path.read_text())
    (results_dir / "study_image_flow.json").write_text(json.dumps(
        {"runs_dir": str(runs_dir), "budget_minutes": minutes, "published": PUBLISHED,
         "published_source": PUBLISHED_SOURCE, "runs": runs}, indent=2))
    lines = [
        "# Image-flow budget study (benchmarks/study_image_flow.py)", "",
        f"Grey-level MNIST (55k/5k/10k), {minutes:g} training CPU-minutes per run (one "
        "thread), runs in `" + str(runs_dir) + "`. Test: all 10,000 test images, exact "
        "bits/dim for the flows (one dequantization draw), 100 importance samples for "
        "the flow-VAE. Curve: 1000 test images.", "",
        "| model | seeds done | test bits/dim | curve bits/dim (latest) | training CPU-min "
        "| wall min (session) | published bits/dim |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        done = [r["result"] for r in mine if r["result"]]
        latest = [r["curve"][-1]["bpd"] for r in mine if r["curve"]]
        cpu = [r["curve"][-1]["train_cpu_seconds"] / 60 for r in mine if r["curve"]]
        wall = [d["session_seconds"] / 60 for d in done]
        published = PUBLISHED.get(kind)
        lines.append(f"| {kind} | {len(done)}/{len(mine)} "
                     f"| {mean_std([d['test_bpd'] for d in done], 3)} | {mean_std(latest, 3)} "
                     f"| {mean_std(cpu, 1)} | {mean_std(wall, 1)} "
                     f"| {published if published else '-'} |")
    lines += ["", f"Published: {PUBLISHED_SOURCE}.", ""]
    if ood:
        lines += ood_table(ood)
    (results_dir / "study_image_flow.md").write_text("\n".join(lines) + "\n")
    draw_curves(runs, results_dir / "study_image_flow_bpd.png")


def ood_table(ood: dict) -> list[str]:
    from nfvae.tasks.ood import comparison_table

    return ["## Outlier detection (AUROC of NLL; MNIST test set against each other set)", "",
            "The flows are trained on grey-level MNIST: an AUROC of 1 means every other "
            "image gets a higher NLL than every MNIST test image; below 0.5, the other set "
            "looks *more* likely to the model than MNIST.", "",
            *comparison_table(ood).splitlines(), ""]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--minutes", type=float, default=45.0,
                        help="training CPU-minutes per run")
    parser.add_argument("--steps-per-point", type=int, default=None,
                        help="training batches between curve points (one 'epoch'); "
                             "default: STEPS_PER_POINT of each kind")
    parser.add_argument("--ood-examples", type=int, default=2000,
                        help="images of each set scored for outlier detection")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run names (e.g. glow_seed1) to train, in ORDER's order")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides for every run (smoke tests)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the tables, figures and the sample grid go")
    parser.add_argument("--report", action="store_true",
                        help="no training: OOD, samples, tables and figures")
    parser.add_argument("--background", action="store_true", help="detach and log to driver.log")
    args = parser.parse_args(argv)
    runs_dir = args.runs_dir.resolve()
    if args.background:
        background(Path(__file__).resolve(), argv, runs_dir, ROOT)
        return
    import logging

    from common import data_dir, pin_threads

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    pin_threads()
    data = data_dir(args.data_dir)
    if not args.report:
        print(f"[{time.strftime('%F %T')}] driver PID {os.getpid()}, nfvae from {ROOT}, "
              f"{args.minutes} CPU-minutes per run", flush=True)
        for kind, seed in ORDER:
            name = run_name(kind, seed)
            if args.only is not None and name not in args.only:
                continue
            run_dir = runs_dir / name
            if is_finished(run_dir, args.minutes):
                print(f"{name}: finished ({read_result(run_dir)}), skipped", flush=True)
                continue
            # One lock per run, so two drivers (--only) can train different runs at once.
            lock = hold_lock(runs_dir, "study_image_flow.py", name)
            train_one(kind, seed, run_dir, data, args.minutes, args.steps_per_point,
                      args.override)
            lock.close()
            write_report(runs_dir, args.minutes, results_dir=args.results_dir)
    samples = args.results_dir / SAMPLES_PNG
    if draw_samples(runs_dir / run_name("glow", 1), samples):
        print(f"wrote {samples}", flush=True)
    ood = detect_outliers(runs_dir, data, args.ood_examples, args.results_dir)
    write_report(runs_dir, args.minutes, ood, results_dir=args.results_dir)
    print(f"wrote {args.results_dir / 'study_image_flow.md'}", flush=True)


if __name__ == "__main__":
    main()
