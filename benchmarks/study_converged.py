"""The converged study: Burda et al.'s (2016) one-layer VAE on dynamically binarized
MNIST, trained to the end of their schedule, then the same model with flow posteriors.

Every run is ``experiment=iwae/mnist_<flow>`` (conf/experiment/iwae/_protocol.yaml:
MLP 784-200-200-50 tanh, batch 20, Adam eps 1e-4, lr 1e-3 * 10^(-i/7) for 3^i epochs,
i = 0..7, 3280 epochs, test NLL with 5000 importance samples) with ``seed=k``, in its
own folder ``<runs-dir>/<flow>_seed<k>`` outside the repository. The driver

* runs the runs one after another in ``ORDER`` (the plain VAE on two seeds first, then
  each flow), one process, one thread, so the machine's other work keeps its cores;
* resumes a run whose folder holds checkpoints (``ckpt_path=last``), so it can be
  stopped (kill its PID, or a reboot) and started again at any time;
* skips a run whose ``result.json`` says it finished at least ``--max-epochs``;
  asking for more epochs later continues such a run from its last checkpoint;
* writes ``benchmarks/results/converged.{json,md}`` and ``converged_nll_vs_cpu.png``
  (test-subset NLL against CPU-hours, a line per flow, a band over seeds) after every
  run and on ``--report``, from what the run folders hold (finished or not).

The NLL-against-compute points come from each run's ``test_curve.jsonl``
(``nfvae.curves.NLLCurveLogger``: 1000 test images x 1000 samples, fixed noise,
every 50 epochs and at each learning-rate stage's end); the final figures from the
run's test after training (all 10,000 test images, 5000 samples) and the active
units (posterior means with variance > 0.01 over the test set, Burda et al.'s count).

CPU time, measured on this 2-core machine with one thread while other work shared it
(training CPU-seconds per step at batch 20, from ``test_curve.jsonl``; an epoch is
2980 steps): plain VAE 7.3-8 ms (~24 CPU-s per epoch over its first 13 epochs),
planar K=10 19.6 ms, Householder 15.1 ms, orthogonal Sylvester 31.3 ms, IAF 14.2 ms.
Full schedule (3280 epochs) per run: VAE ~22 CPU-h, IAF ~39, Householder ~41, planar
~53, O-SNF ~85; the ten runs of ``ORDER`` ~480 CPU-h, plus ~1.5 h per run for the
curve (~65 points of 1000 x 1000 samples, ~40 s each) and the final test (10,000 x
5000 samples, ~30 min). ``--max-epochs 364`` (the end of the sixth learning-rate stage,
lr 1.9e-4) costs 1/9 of the training: ~2.4 CPU-h for the VAE, ~55 CPU-h for all ten
runs; a later ``--max-epochs 3280`` continues the same runs to the full schedule.

    .venv/bin/python benchmarks/study_converged.py --background   # detached; <runs-dir>/driver.log
    .venv/bin/python benchmarks/study_converged.py                # in the foreground
    .venv/bin/python benchmarks/study_converged.py --report       # only the tables and figure
    .venv/bin/python benchmarks/study_converged.py --only none_seed1 --max-epochs 364
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's nfvae, whatever the environment has installed.
sys.path.insert(0, str(ROOT))
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
DEFAULT_RUNS_DIR = Path(os.environ.get("NFVAE_CONVERGED_DIR", ROOT.parent / "runs" / "converged"))
FULL_EPOCHS = 3280
FLOWS = ["none", "planar", "householder", "sylvester_orthogonal", "iaf"]
# The reproduction first (two seeds of the plain VAE), then one seed of every flow,
# then their second seeds: a budget that stops early still has every flow once.
ORDER = ([("none", 1), ("none", 2)] + [(f, 1) for f in FLOWS[1:]]
         + [(f, 2) for f in FLOWS[1:]])
# Burda, Grosse & Salakhutdinov (2016), Table 1, MNIST, one stochastic layer, VAE k=1:
# test NLL (5000 importance samples), nats, and active units. QUOTED, not confirmed: the
# stored copies of the paper reachable here give its abstract and introduction only.
# The protocol (architecture, schedule, batch, 59,600/400 split, dynamic binarization,
# 5000-sample estimator) is confirmed from the authors' code, yburda/iwae
# (experiments.py, datasets.py, iwae.py, optimizers.py).
PUBLISHED = {"none": {"nll": 86.76, "active_units": 19, "confirmed": False,
                      "source": "Burda et al. 2016, Table 1, MNIST, 1 stochastic layer, VAE, k=1 "
                                "(quoted from the issue; not confirmed against the paper)"}}


def is_finished(run_dir: Path, max_epochs: int) -> bool:
    result = read_result(run_dir)
    return bool(result) and int(result.get("max_epochs", 0)) >= max_epochs


def overrides(flow: str, seed: int, run_dir: Path, data_dir: Path, max_epochs: int,
              extra: list[str] = ()) -> list[str]:
    return [f"experiment=iwae/mnist_{flow}", f"seed={seed}", f"paths.output_dir={run_dir}",
            f"data.data_dir={data_dir}", "data.download=false",
            f"trainer.max_epochs={max_epochs}",
            f"ckpt_path={'last' if has_checkpoints(run_dir) else 'null'}", *extra]


def active_units(run_dir: Path, data_dir: Path, threshold: float = 0.01) -> int | None:
    """Latent units whose posterior mean varies over the test set (variance > 0.01)."""
    import torch

    from nfvae.loading import load_module
    from nfvae.tasks.common import build_datamodule

    path = last_checkpoint(run_dir)
    if path is None:
        return None
    module = load_module(path)
    data_cfg = dict(module.hparams.data)
    data_cfg.update(data_dir=str(data_dir), download=False)
    x, _ = build_datamodule(data_cfg).split("test")
    with torch.no_grad():
        mu = torch.cat([module.model.encode(x[i:i + 1000])[0] for i in range(0, len(x), 1000)])
    return int((mu.var(0) > threshold).sum())


def train_one(flow: str, seed: int, run_dir: Path, data_dir: Path, max_epochs: int,
              extra: list[str] = ()) -> dict:
    from common import compose

    from nfvae.training import train

    run_dir.mkdir(parents=True, exist_ok=True)
    args = overrides(flow, seed, run_dir, data_dir, max_epochs, extra)
    print(f"[{time.strftime('%F %T')}] {run_name(flow, seed)}: {' '.join(args)}", flush=True)
    started, cpu_started = time.time(), time.process_time()
    metrics = train(compose(args))
    result = {
        "flow": flow, "seed": seed, "max_epochs": max_epochs,
        "test_nll": metrics.get("test/nll"), "test_neg_elbo": metrics.get("test/neg_elbo"),
        "active_units": active_units(run_dir, data_dir),
        "session_seconds": time.time() - started,
        "session_cpu_seconds": time.process_time() - cpu_started,
        "finished_at": time.strftime("%F %T"),
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    print(f"[{time.strftime('%F %T')}] {run_name(flow, seed)} done: {result}", flush=True)
    return result


# -- the report ------------------------------------------------------------------------
def health(curve: list[dict], run_dir: Path) -> dict:
    """Growth figures of one run: seconds per epoch at the start, middle and end, memory,
    event-file and checkpoint sizes (now), and the time spent scoring the curve."""
    if not curve:
        return {}
    mid = curve[len(curve) // 2]
    return {
        "epochs_done": curve[-1]["epoch"],
        "epoch_seconds_start_mid_end": [curve[0]["epoch_seconds"], mid["epoch_seconds"],
                                        curve[-1]["epoch_seconds"]],
        "rss_mb_first_last": [curve[0]["rss_mb"], curve[-1]["rss_mb"]],
        "peak_rss_mb": max(p["peak_rss_mb"] for p in curve),
        "event_mb": sum(p.stat().st_size for p in run_dir.rglob("events.out.tfevents.*")) / 2**20,
        "tensorboard_dir_mb": sum(p.stat().st_size for p in (run_dir / "tensorboard").rglob("*")
                                  if p.is_file()) / 2**20,
        "checkpoint_dir_mb": sum(p.stat().st_size for p in (run_dir / "checkpoints").glob("*")
                                 if p.is_file()) / 2**20,
        "curve_scoring_seconds": sum(p["score_seconds"] for p in curve),
        "validation_and_figure_seconds": curve[-1].get("validation_and_figure_seconds"),
        "train_cpu_hours": curve[-1]["train_cpu_seconds"] / 3600,
        "train_wall_hours": curve[-1]["train_seconds"] / 3600,
    }


def collect(runs_dir: Path) -> list[dict]:
    runs = []
    for flow, seed in ORDER:
        run_dir = runs_dir / run_name(flow, seed)
        if not run_dir.is_dir():
            continue
        curve = read_curve(run_dir)
        runs.append({"name": run_name(flow, seed), "flow": flow, "seed": seed,
                     "folder": str(run_dir), "result": read_result(run_dir), "curve": curve,
                     "health": health(curve, run_dir)})
    return runs


def write_report(runs_dir: Path, max_epochs: int) -> None:
    runs = collect(runs_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "converged.json").write_text(json.dumps(
        {"runs_dir": str(runs_dir), "schedule_epochs": max_epochs, "published": PUBLISHED,
         "runs": runs}, indent=2))
    lines = [
        "# Converged study (benchmarks/study_converged.py)", "",
        f"Runs in `{runs_dir}`; schedule {max_epochs} of {FULL_EPOCHS} epochs. Final figures: "
        "10,000 test images, 5000 importance samples; curve: 1000 images x 1000 samples.", "",
        "| flow | seeds done | epochs | -ELBO | NLL | active units | curve NLL (latest) "
        "| CPU-h | published NLL (quoted) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for flow in FLOWS:
        mine = [r for r in runs if r["flow"] == flow]
        if not mine:
            continue
        done = [r["result"] for r in mine if r["result"]]
        epochs = "/".join(str(r["health"].get("epochs_done", 0)) for r in mine)
        latest = [r["curve"][-1]["nll"] for r in mine if r["curve"]]
        cpu = [r["health"]["train_cpu_hours"] for r in mine if r["health"]]
        published = PUBLISHED.get(flow, {}).get("nll")
        lines.append(
            f"| {flow} | {len(done)}/{len(mine)} | {epochs} "
            f"| {mean_std([d['test_neg_elbo'] for d in done])} "
            f"| {mean_std([d['test_nll'] for d in done])} "
            f"| {mean_std([d['active_units'] for d in done])} | {mean_std(latest)} "
            f"| {mean_std(cpu)} | {published if published else '-'} |")
    lines += ["", "Long-run health (per run): seconds per epoch at start/middle/end, RSS, "
              "event files and checkpoints.", "",
              "| run | epochs | s/epoch start, mid, end | RSS MiB first, last (peak) "
              "| events MiB | tensorboard dir MiB | checkpoints MiB | curve scoring s "
              "| validation + figures s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        h = r["health"]
        if not h:
            continue
        lines.append(
            f"| {r['name']} | {h['epochs_done']} "
            f"| {', '.join(f'{s:.1f}' for s in h['epoch_seconds_start_mid_end'])} "
            f"| {h['rss_mb_first_last'][0]:.0f}, {h['rss_mb_first_last'][1]:.0f} "
            f"({h['peak_rss_mb']:.0f}) | {h['event_mb']:.2f} | {h['tensorboard_dir_mb']:.2f} "
            f"| {h['checkpoint_dir_mb']:.1f} | {h['curve_scoring_seconds']:.0f} "
            f"| {h.get('validation_and_figure_seconds') or 0:.0f} |")
    (RESULTS / "converged.md").write_text("\n".join(lines) + "\n")
    draw_curves(runs, RESULTS / "converged_nll_vs_cpu.png")


def draw_curves(runs: list[dict], path: Path) -> None:
    """NLL against CPU-hours: per flow the mean over seeds at each scored epoch the
    seeds share, and a band from their min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for flow in FLOWS:
        curves = [r["curve"] for r in runs if r["flow"] == flow and r["curve"]]
        if curves:
            plot_over_seeds(ax, curves, "train_cpu_seconds", 3600, "nll", flow)
    if PUBLISHED["none"]["nll"]:
        ax.axhline(PUBLISHED["none"]["nll"], color="k", ls="--", lw=0.8,
                   label="Burda et al. 2016, VAE k=1 (quoted)")
    ax.set_xscale("log")
    ax.set_xlabel("training CPU-hours (one thread)")
    ax.set_ylabel("test NLL, nats (1000 images x 1000 samples)")
    ax.set_title("MNIST, IWAE-paper MLP VAE: NLL against compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-epochs", type=int, default=FULL_EPOCHS,
                        help="stop every run here (364: the end of the sixth LR stage)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run names (e.g. none_seed1) to train, in ORDER's order")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides for every run (smoke tests: "
                             "trainer.limit_train_batches=20 test.num_samples=10)")
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--background", action="store_true", help="detach and log to driver.log")
    args = parser.parse_args(argv)
    runs_dir = args.runs_dir.resolve()
    if args.background:
        background(Path(__file__).resolve(), argv, runs_dir, ROOT)
        return
    if args.report:
        write_report(runs_dir, args.max_epochs)
        return
    import logging

    from common import data_dir, pin_threads

    # nfvae's own messages (which checkpoint a run resumes from) reach driver.log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    pin_threads()
    data = data_dir(args.data_dir)
    lock = hold_lock(runs_dir, 'study_converged.py')  # noqa: F841  (held until exit)
    print(f"[{time.strftime('%F %T')}] driver PID {os.getpid()}, nfvae from {ROOT}, "
          f"max_epochs {args.max_epochs}", flush=True)
    for flow, seed in ORDER:
        name = run_name(flow, seed)
        if args.only is not None and name not in args.only:
            continue
        run_dir = runs_dir / name
        if is_finished(run_dir, args.max_epochs):
            print(f"{name}: finished ({read_result(run_dir)}), skipped", flush=True)
            continue
        train_one(flow, seed, run_dir, data, args.max_epochs, args.override)
        write_report(runs_dir, args.max_epochs)
    write_report(runs_dir, args.max_epochs)


if __name__ == "__main__":
    main()
