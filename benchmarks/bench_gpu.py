"""The speed levers of issue 16, one at a time, on a GPU (or the CPU when there is none).

The model of bench_peers.py (MNIST with dynamic binarization, MLP 784-300-300, latent
64, amortized planar K = 10, batch 100, Adam 1e-3), through bench_peers.py's own
plain loop and its nfvae run (``train(cfg)`` on the real conf/), on ``--device``.
Contenders, each in its own process, interleaved over rounds:

* ``plain-eager``: the hand-written plain PyTorch loop, eager: the baseline;
* ``nfvae-eager``: nfvae with every lever off (float32, Adam's default foreach update,
  ``training.compile=false``);
* ``nfvae-fused-adam``: ``optimizer.fused=true``;
* ``nfvae-tf32``: TF32 matmuls and convolutions (CUDA only);
* ``nfvae-compile``: ``training.compile=true`` (``torch.compile``, default mode);
* ``nfvae-reduce-overhead``: ``training.compile={mode:reduce-overhead}``, CUDA graphs
  (CUDA only): small flow-VAE steps are launch-bound on a GPU;
* ``nfvae-bf16``: ``trainer.precision=bf16-mixed`` (log-dets and log-densities stay
  float32).

CUDA-only levers are skipped on the CPU, with the reason printed. Per run: training
samples/s after ``--warmup`` untimed steps (compilation falls there), the ratio to the
plain loop of the same round, and the importance-sampled NLL of ``--is-images`` test
images x 500 samples (time and value).

    NFVAE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gpu.py \
        [--device cuda] [--rounds 3] [--steps 300] [--warmup 30] [--only nfvae-eager ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_peers  # noqa: E402  (bench_peers.py's model, loops and nfvae run)

BASELINE = "plain-eager"
#: nfvae's contenders: each lever's overrides, on top of every lever off.
LEVERS_OFF = {"optimizer.fused": "null", "training.compile": "false",
              "trainer.precision": "32-true"}
LEVERS = {
    "nfvae-eager": {},
    "nfvae-fused-adam": {"optimizer.fused": "true"},
    "nfvae-tf32": {},  # a process-wide switch, set in the worker
    "nfvae-compile": {"training.compile": "{}"},
    "nfvae-reduce-overhead": {"training.compile": "{mode:reduce-overhead}"},
    "nfvae-bf16": {"trainer.precision": "bf16-mixed"},
}
CONTENDERS = [BASELINE, *LEVERS]
CUDA_ONLY = {
    "nfvae-tf32": "TF32 is a mode of CUDA matmuls and convolutions",
    "nfvae-reduce-overhead": "reduce-overhead records CUDA graphs",
}


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def skipped(names: list[str], device: str) -> dict[str, str]:
    """Contenders that cannot run on ``device``, with the reason."""
    if device.startswith("cuda"):
        return {}
    return {name: f"{CUDA_ONLY[name]}; device is {device}" for name in names if name in CUDA_ONLY}


# -------------------------------------------------------------------------- worker
def worker(name: str, device: str, steps: int, warmup: int, backend: str | None) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    if name == "nfvae-tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_u8, test_u8 = bench_peers.mnist_uint8()
    step_times: list = []
    if name == BASELINE:
        model = bench_peers.plain_model("amortized").to(device)
        bench_peers.plain_train(model, train_u8.to(device), steps, warmup, step_times)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            step_times[-1] = bench_peers.now()
        is_s, nll = bench_peers.plain_nll(model.eval(), test_u8)
    else:
        accelerator = "gpu" if device.startswith("cuda") else "cpu"
        overrides = {**LEVERS_OFF, **LEVERS[name], "trainer.accelerator": accelerator}
        if backend and "training.compile" in LEVERS[name]:
            options = [o for o in [LEVERS[name]["training.compile"][1:-1]] if o]
            overrides["training.compile"] = "{" + ",".join([*options, f"backend:{backend}"]) + "}"
        is_s, nll = bench_peers.nfvae_run(
            "amortized", steps, warmup, step_times, None, test_u8, [],
            extra=tuple(f"{k}={v}" for k, v in overrides.items()), device=device)
        step_times = step_times[1:]  # the first stamp is the first step's start
    train_wall = step_times[-1][0] - step_times[0][0]
    return {"name": name, "device": device, "samples_per_s": steps * bench_peers.BATCH / train_wall,
            "is_s": is_s[0], "nll": nll}


# -------------------------------------------------------------------------- driver
def run_worker(name: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--device",
           args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--is-images", str(args.is_images)]
    if args.backend:
        cmd += ["--backend", args.backend]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], rounds: int) -> str:
    """Medians over rounds; ratios to the plain eager loop within each round."""
    names = list(dict.fromkeys(r["name"] for r in results))
    by = {(r["name"], r["round"]): r for r in results}
    lines = [f"| | samples/s | vs {BASELINE} (per round) | IS-NLL {bench_peers.IS_IMAGES} x "
             f"{bench_peers.IS_SAMPLES}, s | IS vs {BASELINE} | test NLL |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        runs = [by[name, r] for r in range(rounds) if (name, r) in by]
        paired = [(by[name, r], by[BASELINE, r]) for r in range(rounds)
                  if (name, r) in by and (BASELINE, r) in by]

        def ratio(key, inverse=False):
            values = [(b[key] / a[key]) if inverse else (a[key] / b[key]) for a, b in paired]
            if not values:
                return f"n/a (no {BASELINE})"
            return f"{statistics.median(values):.2f} ({', '.join(f'{x:.2f}' for x in values)})"

        def med(key):
            return statistics.median(r[key] for r in runs)

        lines.append(f"| {name} | {med('samples_per_s'):.0f} | {ratio('samples_per_s')} | "
                     f"{med('is_s'):.2f} | {ratio('is_s', inverse=True)} | {med('nll'):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=30,
                        help="untimed steps first (compilation and CUDA-graph recording)")
    parser.add_argument("--is-images", type=int, default=bench_peers.IS_IMAGES,
                        help="test images scored (fewer for quick checks)")
    parser.add_argument("--only", nargs="+", default=None, choices=CONTENDERS)
    parser.add_argument("--backend", default=None,
                        help="torch.compile backend of the compile levers (default inductor; "
                             "aot_eager for a quick check of the path)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or default_device()
    bench_peers.IS_IMAGES = args.is_images
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.steps, args.warmup,
                                args.backend)))
        return
    names = args.only or CONTENDERS
    for name, why in skipped(names, args.device).items():
        print(f"skipped {name}: {why}")
    names = [n for n in names if n not in skipped(names, args.device)]
    print(f"device {args.device}, {args.rounds} round(s), {args.steps} timed steps after "
          f"{args.warmup}, contenders: {', '.join(names)}", flush=True)
    results = []
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            result = {**run_worker(name, args), "round": r}
            results.append(result)
            print(f"  round {r + 1} {name:<22s} {result['samples_per_s']:7.0f} samples/s  "
                  f"IS {result['is_s']:6.2f} s  NLL {result['nll']:.2f}", flush=True)
    print(f"\n{args.device}, {args.rounds} round(s), {args.steps} timed steps, batch "
          f"{bench_peers.BATCH}\n")
    print(table(results, args.rounds), flush=True)


if __name__ == "__main__":
    main()
