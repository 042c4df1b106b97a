"""Importance-sampling speed: flow parameters once per image against once per sample.

FlowVAE scores S posterior samples of B images through ``flow.forward_repeated``,
which runs a parametrized flow's head and constraint on the B context rows only.
The alternative, the flow on a context repeated S times, is what a plain
implementation does. Both give the same log-weights (tests/test_flows.py); this
prints their times, interleaved over rounds, for each flow family in ``--flows``.

Model: the study's (MLP 128-128, latent 32, 4 amortized layers, O-SNF with 8
vectors), untrained; 100 random binary images x ``--num-samples``; one thread.

    .venv/bin/python benchmarks/bench_scoring.py [--num-samples 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PLANAR_MNIST_OVERRIDES, compose, interleaved, pin_threads, timed  # noqa: E402
from study_mnist import FLOW_SETTINGS  # noqa: E402

from nfvae.flows import FlowSequence  # noqa: E402
from nfvae.objectives import importance_log_likelihood  # noqa: E402
from nfvae.training import build_module  # noqa: E402

FLOWS = ["planar", "radial", "householder", "sylvester_orthogonal", "sylvester_householder",
         "iaf", "realnvp"]


def study_model(flow: str):
    overrides = [o for o in PLANAR_MNIST_OVERRIDES if not o.startswith(("flow", "model."))]
    overrides += [f"flow={flow}", "flow.num_layers=4", "model.latent_dim=32",
                  "model.encoder.hidden_dims=[128,128]", "model.decoder.hidden_dims=[128,128]",
                  *FLOW_SETTINGS.get(flow, [])]
    return build_module(compose(overrides), (1, 28, 28)).model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flows", nargs="+", default=FLOWS)
    args = parser.parse_args()
    pin_threads()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((100, 1, 28, 28), 0.3))
    print(f"100 images x {args.num_samples} importance samples, median of {args.rounds} rounds")
    print(f"{'flow':24s} {'per sample':>11s} {'per image':>10s} {'speed-up':>9s}")
    for flow in args.flows:
        model = study_model(flow)

        def per_image(model=model):
            return timed(lambda: importance_log_likelihood(model, x, args.num_samples))

        def per_sample(model=model):
            # The flow on the context repeated S times: parameters once per sample.
            model.flow.forward_repeated = lambda z, c, s: FlowSequence.forward_repeated(
                model.flow, z, c.repeat(s, 1), 1)
            try:
                return timed(lambda: importance_log_likelihood(model, x, args.num_samples))
            finally:
                del model.flow.forward_repeated

        with torch.no_grad():
            times = interleaved({"per_sample": per_sample, "per_image": per_image},
                                args.rounds, quiet=True)
        slow, fast = (statistics.median(times[k]) for k in ("per_sample", "per_image"))
        print(f"{flow:24s} {slow:10.2f}s {fast:9.2f}s {slow / fast:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
