"""Importance-sampling speed: per-data-point work once per image against once per sample.

FlowVAE scores S posterior samples of B images through ``flow.forward_repeated``. A
parametrized flow runs its head and constraint on the B context rows only; a Sylvester
family also takes those B-row parameters without copying them S times (each image's
samples go through its matrices as one GEMM); IAF and the couplings add the context's
first-layer term once per image. Contenders, timed in the same interleaved rounds (the
order alternating; in each round a contender scores ``--calls`` times, the fastest counts):

* ``per-sample``: the flow on the context repeated S times (heads and networks on S*B
  rows), what a plain implementation does, and for IAF and the couplings what
  ``forward_repeated`` did before; it shares the process of ``now``, so their ratio has
  no process-to-process bias (up to +-10% on a loaded machine: compare ``--before`` with
  this tree's own branch);
* ``before``: this tree's ``forward_repeated`` at git ref ``--before`` (default:
  ``main``), with that ref's nfvae, conf/ and benchmarks/ (``git archive``);
* ``now``: this tree's ``forward_repeated``.

Each is an end-to-end ``importance_log_likelihood`` (encoder, flow, decoder, chunks).
The checkouts run in their own worker processes.
The same seeds give every contender the same weights and the same noise; the script
checks that their mean NLLs agree. Times are the worker thread's CPU seconds (one
thread: on a shared machine they measure the work, not the wait for a core); the table
gives medians over rounds and the median of the per-round ratios.

Model: the study's (MLP 128-128, latent 32, 4 amortized layers, O-SNF with 8
vectors), untrained; 100 random binary images x ``--num-samples``; one thread.

    .venv/bin/python benchmarks/bench_scoring.py [--num-samples 400] [--rounds 5] \\
        [--calls 3] [--before main | --before ''] [--flows iaf realnvp ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ["planar", "radial", "householder", "sylvester_orthogonal", "sylvester_householder",
         "sylvester_triangular", "iaf", "realnvp"]

# Runs inside a checkout (sys.path[0]): its nfvae, and its benchmarks' study_model, which
# every version of this script has. Reads "flow mode" lines, answers one JSON line each.
WORKER = r"""
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/benchmarks"]
import torch
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
from bench_scoring import study_model
from nfvae.flows import FlowSequence
from nfvae.objectives import importance_log_likelihood
num_samples, calls = int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
x = torch.bernoulli(torch.full((100, 1, 28, 28), 0.3))
models = {}
def per_sample(f):
    # The context repeated S times: heads and networks on S*B rows.
    return lambda z, c, s: FlowSequence.forward_repeated(f, z, c.repeat(s, 1), 1)
for line in sys.stdin:
    flow, mode = line.split()
    if flow not in models:
        torch.manual_seed(0)
        models[flow] = study_model(flow)
    f = models[flow].flow
    if mode == "per_sample":
        f.forward_repeated = per_sample(f)
    elif "forward_repeated" in vars(f):
        del f.forward_repeated
    seconds = []
    for _ in range(calls):  # the fastest of a few: bursts of load on a shared machine
        torch.manual_seed(1)
        with torch.no_grad():
            start = time.thread_time()
            nll = -importance_log_likelihood(models[flow], x, num_samples)
            seconds.append(time.thread_time() - start)
    print(json.dumps({"seconds": min(seconds), "nll": float(nll.mean())}), flush=True)
"""


def study_model(flow: str):
    """The study's model for ``flow``, untrained, in eval mode (workers of later
    versions import this from the checkout they measure)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import PLANAR_MNIST_OVERRIDES, compose
    from study_mnist import FLOW_SETTINGS

    from nfvae.training import build_module

    overrides = [o for o in PLANAR_MNIST_OVERRIDES if not o.startswith(("flow", "model."))]
    overrides += [f"flow={flow}", "flow.num_layers=4", "model.latent_dim=32",
                  "model.encoder.hidden_dims=[128,128]", "model.decoder.hidden_dims=[128,128]",
                  *FLOW_SETTINGS.get(flow, [])]
    return build_module(compose(overrides), (1, 28, 28)).model.eval()


class Worker:
    """A checkout's process: ``time(flow, mode)`` -> (CPU seconds, mean NLL) of a scoring."""

    def __init__(self, checkout: Path, num_samples: int, calls: int):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(checkout)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(checkout), str(num_samples), str(calls)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=checkout)

    def time(self, flow: str, mode: str) -> tuple[float, float]:
        self.proc.stdin.write(f"{flow} {mode}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a scoring worker died on {flow} (its traceback is above)")
        answer = json.loads(line)
        return answer["seconds"], answer["nll"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def checkout_of(ref: str, into: Path) -> Path:
    """nfvae, conf/ and benchmarks/ of git ``ref``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "nfvae", "conf",
                              "benchmarks"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3,
                        help="scorings per contender and round; the fastest counts")
    parser.add_argument("--flows", nargs="+", default=FLOWS)
    parser.add_argument("--before", default="main",
                        help="git ref whose forward_repeated is timed too ('' for none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        contenders = {"per-sample": (ROOT, "per_sample")}
        if args.before:
            contenders[f"before ({args.before})"] = (checkout_of(args.before, Path(tmp)),
                                                     "per_image")
        contenders["now"] = (ROOT, "per_image")
        workers = {path: Worker(path, args.num_samples, args.calls)
                   for path in dict.fromkeys(path for path, _ in contenders.values())}
        names = list(contenders)
        print(f"100 images x {args.num_samples} importance samples, one thread, "
              f"{args.rounds} interleaved rounds of {args.calls} scorings per contender; CPU "
              "seconds (the fastest of a round's, median over rounds); now's speed-up: median "
              "of the per-round ratios")
        header = "".join(f"{n:>18s}" for n in names)
        ratios = "".join(f"{'vs ' + n.split()[0].replace(' ', '-'):>14s}" for n in names[:-1])
        print(f"{'flow':24s}{header}{ratios}   NLL spread", flush=True)
        try:
            for flow in args.flows:
                times = {n: [] for n in names}
                nlls = set()
                for r in range(args.rounds):
                    for name in names if r % 2 == 0 else names[::-1]:
                        path, mode = contenders[name]
                        seconds, nll = workers[path].time(flow, mode)
                        times[name].append(seconds)
                        nlls.add(nll)
                cells = "".join(f"{statistics.median(times[n]):17.2f}s" for n in names)
                speedups = "".join(
                    f"{statistics.median(a / b for a, b in zip(times[n], times['now'])):13.2f}x"
                    for n in names[:-1])
                print(f"{flow:24s}{cells}{speedups}   {max(nlls) - min(nlls):.1e}", flush=True)
        finally:
            for worker in workers.values():
                worker.close()


if __name__ == "__main__":
    main()
