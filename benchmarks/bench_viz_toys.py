"""How well the 2-D density experiments fit: the KL each run reaches.

    .venv/bin/python benchmarks/bench_viz_toys.py                  # every target, ~10 min
    .venv/bin/python benchmarks/bench_viz_toys.py --only u1 two_moons --figures docs/img

Energies (U1-U4, reverse KL) with K = 32 planar layers, as in Rezende & Mohamed
(2015, Fig. 3); sampled targets (maximum likelihood) with 4 rational-quadratic
spline-coupling layers. Each run is ``train(cfg)`` on the experiment's config
(conf/experiment/toy/*.yaml) plus the overrides below; the KL is on the test
split (16384 fixed base draws for energies, 5000 held-out samples otherwise):
KL(q || p) for energies, KL(p || q) for sampled targets, in nats. ``--figures``
runs visualize.py's figures on each final checkpoint into that folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import compose  # benchmarks/common.py, beside this script

from nfvae.training import train
from nfvae.tasks.visualize import visualize

PLANAR_32 = ["flow=planar", "flow.num_layers=32"]
SPLINE_4 = ["flow=spline", "flow.num_layers=4", "flow.family.num_bins=16",
            "flow.family.tail_bound=4.0", "flow.family.hidden_dims=[64,64]",
            "optimizer.lr=5e-3", "trainer.max_epochs=20"]
RUNS = {
    "u1": PLANAR_32, "u2": PLANAR_32, "u3": PLANAR_32, "u4": PLANAR_32,
    "two_moons": SPLINE_4, "rings": SPLINE_4, "eight_gaussians": SPLINE_4,
    "checkerboard": SPLINE_4,
}
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.density"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), default=sorted(RUNS))
    parser.add_argument("--figures", type=Path, default=None,
                        help="write each run's visualize.py figures to FIGURES/<target>/")
    parser.add_argument("--runs", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs_root = args.runs or Path(tempfile.mkdtemp(prefix="bench_viz_toys_"))
    rows = []
    for name in args.only:
        out = runs_root / name
        overrides = [f"experiment=toy/{name}", *RUNS[name], *QUIET, f"paths.output_dir={out}"]
        start = time.perf_counter()
        metrics = train(compose(overrides))
        seconds = time.perf_counter() - start
        rows.append((name, " ".join(RUNS[name][:2]), metrics["test/kl"], seconds))
        print(f"{name}: test KL {metrics['test/kl']:.4f} nats ({seconds:.0f} s)", flush=True)
        if args.figures is not None:
            visualize(compose([f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
                               f"out={args.figures / name}",
                               f"paths.output_dir={out / 'viz'}"], config_name="visualize"))
    print(f"\n{'target':16s} {'flow':30s} {'test KL [nats]':>15s} {'wall':>7s}")
    for name, flow, kl, seconds in rows:
        print(f"{name:16s} {flow:30s} {kl:15.4f} {seconds:6.0f}s")
    print(f"\nrun folders: {runs_root}")


if __name__ == "__main__":
    main()
