"""Training images/s of nfvae's multi-scale Glow against normflows' (1.7) MultiscaleFlow
with Glow blocks, at the same architecture, interleaved in one run on one thread.

    python benchmarks/bench_image_flow.py [--levels 3 --steps-per-level 8 --hidden 128]

The data: MNIST training images, zero-padded 28x28 -> 32x32 (three levels squeeze
three times, and 28 / 8 is no integer), dequantized (x + u) / 256. One training step:
-log p(v) averaged over the batch, backward, Adam. The architectures match: per level
a squeeze and K steps of ActNorm, LU 1x1 convolution and affine channel coupling
(3x3 conv, ReLU, 1x1 conv, ReLU, zero-initialised 3x3 conv, hidden channels h), half
the channels split off between levels. They differ where the libraries do: nfvae's
split prior is Glow's conditional one (a zero-initialised 3x3 conv on the kept half;
normflows' ``GlowBase`` is a learned per-channel Gaussian), its coupling scale is
exp of a soft-clamped log-scale (normflows: Glow's sigmoid). Both start their ActNorms
from one batch before timing. normflows is not a dependency of nfvae: pip install
normflows==1.7.0 to run this.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, interleaved, pin_threads, timed  # noqa: E402

from nfvae.flows.image import MultiscaleFlow, dequantize  # noqa: E402


def mnist_padded(root: Path, count: int) -> torch.Tensor:
    """The first ``count`` MNIST training images as uint8 (count, 1, 32, 32)."""
    raw = np.fromfile(root / "MNIST" / "raw" / "train-images-idx3-ubyte", dtype=np.uint8)
    images = torch.from_numpy(raw[16:].reshape(-1, 1, 28, 28)[:count].copy())
    return torch.nn.functional.pad(images, (2, 2, 2, 2))


def normflows_glow(levels: int, steps: int, hidden: int, shape: tuple[int, int, int]):
    """normflows' Glow example (examples/glow.ipynb) without class conditioning."""
    import normflows as nf

    channels, height, width = shape
    q0, merges, flows = [], [], []
    for i in range(levels):
        flows.append([nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden,
                                         split_mode="channel", scale=True)
                      for _ in range(steps)] + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (channels * 2 ** (levels - i), height // 2 ** (levels - i),
                      width // 2 ** (levels - i))
        else:
            latent = (channels * 2 ** (levels + 1), height // 2 ** levels, width // 2 ** levels)
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps-per-level", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    pin_threads()
    torch.manual_seed(0)

    images = mnist_padded(data_dir(args.data_dir), args.batch_size * args.steps)
    batches = images.split(args.batch_size)
    shape = (1, 32, 32)
    ours = MultiscaleFlow(shape, levels=args.levels, steps_per_level=args.steps_per_level,
                          hidden_channels=args.hidden, kind="glow")
    theirs = normflows_glow(args.levels, args.steps_per_level, args.hidden, shape)
    with torch.no_grad():  # both start their ActNorms from the first batch
        first = dequantize(batches[0])
        ours.initialize(first)
        theirs.log_prob(first, None)
    print(f"parameters: nfvae {sum(p.numel() for p in ours.parameters()):,}, "
          f"normflows {sum(p.numel() for p in theirs.parameters()):,}")

    def trainer(model, log_prob):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def epoch() -> None:
            for batch in batches:
                loss = -log_prob(dequantize(batch)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return lambda: timed(epoch)

    contenders = {"nfvae": trainer(ours, ours.log_prob),
                  "normflows": trainer(theirs, lambda v: theirs.log_prob(v, None))}
    for run in contenders.values():  # warm-up: allocator, first Adam state
        run()
    times = interleaved(contenders, args.rounds)
    images_per_round = args.batch_size * len(batches)
    rate = {name: images_per_round / statistics.median(t) for name, t in times.items()}
    print(f"Glow L={args.levels} K={args.steps_per_level} hidden={args.hidden}, batch "
          f"{args.batch_size}, 1x32x32, one thread, median of {args.rounds} rounds:")
    for name, r in rate.items():
        print(f"  {name:<10s} {r:7.1f} training images/s")
    print(f"  ratio nfvae / normflows: {rate['nfvae'] / rate['normflows']:.2f}x (of medians); "
          "per round: " + ", ".join(f"{b / a:.2f}x" for a, b in
                                    zip(times["nfvae"], times["normflows"], strict=True)))


if __name__ == "__main__":
    main()
