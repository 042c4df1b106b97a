"""Training throughput of every flow family on MNIST: samples per second, one thread.

The core issue's setup: MLP encoder/decoder 784-300-300, latent 64, batch 100,
Adam 1e-3, dynamically binarised MNIST, every family amortized, K = 4 and 16
layers, each family with the options of its conf/flow/<name>.yaml. A plain loop
over FlowVAE (no Trainer, no logging), so the figures measure the model and
its flow. Configurations are interleaved over rounds and the median of the
rounds is reported, with the ratio to the plain VAE (flow=none) of the same
round, which is what to compare on a shared machine. The Sylvester families also
run with ``shared_triangles=false`` (R~ from its own head matrix instead of the
transposed lower part of R's, as the paper's code does) to measure that sharing.
With ``--compile`` every configuration also runs with its model under
``torch.compile`` (the compilation happens in the untimed warm-up steps, and its
seconds are printed), interleaved with its eager self, and the table gains the
ratio of the two: what compiling buys each family.

    NFVAE_DATA_DIR=../shared/data python benchmarks/bench_flows.py
    NFVAE_DATA_DIR=../shared/data python benchmarks/bench_flows.py --compile --layers 4
    python benchmarks/bench_flows.py --data-dir ../shared/data --steps 50 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nfvae.data import MNISTDataModule
from nfvae.flows import FLOW_FAMILIES, AmortizedParameters
from nfvae.likelihoods import Bernoulli
from nfvae.model import FlowVAE
from nfvae.nets import MLPDecoder, MLPEncoder
from nfvae.objectives import negative_elbo

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = list(FLOW_FAMILIES)
SYLVESTER = [name for name in FAMILIES if name.startswith("sylvester_")]
LATENT, HIDDEN, BATCH, LR = 64, [300, 300], 100, 1e-3


def flow_factory(name: str, num_layers: int, options: dict):
    """conf/flow/<name>.yaml, amortized, with K layers: the partial FlowVAE completes."""
    cfg = OmegaConf.load(ROOT / "conf" / "flow" / f"{name}.yaml")
    cfg.num_layers = num_layers
    if name != "none":
        cfg.amortized = True
    for key, value in options.items():
        cfg.family[key] = value
    return instantiate(cfg)


def build(name: str, num_layers: int, options: dict, seed: int = 0
          ) -> tuple[FlowVAE, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = FlowVAE(
        data_shape=(1, 28, 28), latent_dim=LATENT,
        encoder=functools.partial(MLPEncoder, hidden_dims=HIDDEN),
        decoder=functools.partial(MLPDecoder, hidden_dims=HIDDEN),
        flow=flow_factory(name, num_layers, options), likelihood=Bernoulli(),
    )
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def run_steps(model, optimizer, images: torch.Tensor, steps: int, generator,
              forward=None) -> float:
    """Seconds for ``steps`` training steps on random batches (binarised per batch);
    ``forward``: what computes the model's output (the compiled model), else the model."""
    forward = model if forward is None else forward
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(images), (BATCH,), generator=generator)
        x = torch.bernoulli(images[idx], generator=generator)
        loss = negative_elbo(forward(x), 1.0).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)}")
    return time.perf_counter() - start


def flow_sizes(model: FlowVAE) -> tuple[int, int]:
    """Flow parameters in total, and the amortized head outputs per layer (0 if none)."""
    params = sum(p.numel() for p in model.flow.parameters())
    heads = [m.head.out_features for m in model.flow.modules()
             if isinstance(m, AmortizedParameters)]
    return params, (heads[0] if heads else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("NFVAE_DATA_DIR",
                                                             ROOT.parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=50, help="timed steps per configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--no-unshared", action="store_true",
                        help="skip the shared_triangles=false Sylvester rows")
    parser.add_argument("--compile", action="store_true",
                        help="also run each configuration under torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = MNISTDataModule(data_dir=str(args.data_dir), download=False, batch_size=BATCH)
    images = data.load_splits()["train"][0]
    generator = torch.Generator().manual_seed(0)

    # (label, family, K, options)
    configs = [("none", "none", 0, {})]
    for k in args.layers:
        for f in args.families:
            configs.append((f, f, k, {}))
            if f in SYLVESTER and not args.no_unshared:
                configs.append((f"{f}, shared_triangles=false", f, k,
                                {"shared_triangles": False}))
    built = {c[0:3]: build(*c[1:]) for c in configs}
    options = {c[0:3]: c[3] for c in configs}
    configs = [c[0:3] for c in configs]
    # (config, compiled) -> what runs the forward; a compiled copy shares nothing with
    # its eager self (its own model and optimizer, same seed), so they train alike.
    runs = {(c, False): (*built[c], None) for c in configs}
    compile_seconds: dict[tuple, float] = {}
    if args.compile:
        for c in configs:
            model, optimizer = build(c[1], c[2], options[c])
            runs[(c, True)] = (model, optimizer, torch.compile(model, dynamic=False))
    for key, (model, optimizer, forward) in runs.items():
        started = time.perf_counter()
        run_steps(model, optimizer, images, args.warmup, generator, forward)
        if key[1]:
            compile_seconds[key[0]] = time.perf_counter() - started

    seconds: dict[tuple, list[float]] = {key: [] for key in runs}
    for r in range(args.rounds):
        for key, (model, optimizer, forward) in runs.items():
            seconds[key].append(run_steps(model, optimizer, images, args.steps, generator,
                                          forward))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    base = seconds[(("none", "none", 0), False)]
    print(f"\nMNIST, MLP 784-{HIDDEN[0]}-{HIDDEN[1]}, latent {LATENT}, batch {BATCH}, Adam {LR}, "
          f"1 thread, amortized; {args.steps} steps x {args.rounds} rounds (median)\n")
    compiled_columns = (" compiled samples/s | compiled vs eager | compile + warm-up, s |"
                        if args.compile else "")
    print(f"| family | K | samples/s | time vs none | flow params | head outputs/layer |"
          f"{compiled_columns}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.compile else ""))
    for c in configs:
        eager = seconds[(c, False)]
        rate = BATCH * args.steps / statistics.median(eager)
        ratio = statistics.median(s / b for s, b in zip(eager, base, strict=True))
        params, head = flow_sizes(built[c][0])
        row = (f"| {c[0]} | {c[2]} | {rate:,.0f} | {ratio:.2f}x | {params:,} | "
               f"{f'{head:,}' if head else '-'} |")
        if args.compile:
            compiled = seconds[(c, True)]
            speedup = statistics.median(e / k for e, k in zip(eager, compiled, strict=True))
            row += (f" {BATCH * args.steps / statistics.median(compiled):,.0f} | "
                    f"{speedup:.2f}x | {compile_seconds[c]:.0f} |")
        print(row)


if __name__ == "__main__":
    main()
