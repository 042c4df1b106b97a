"""Framework vs plain PyTorch: training throughput and importance-sampling speed.

The same model and math in both (MNIST 55k training images, dynamic binarization,
MLP 784-300-300, latent 64, amortized planar K=10, batch 100, Adam 1e-3, one thread):

* framework: nfvae's Trainer path (the real conf/, LightningModule, in-memory
  DataModule, TensorBoard logging at the shipped ``trainer.log_every_n_steps``), one
  epoch per ``fit``;
* plain: the leanest loop over the same FlowVAE and objective, data preloaded,
  batches drawn by index.

Epochs alternate between the two (interleaved rounds), so machine noise hits both.
Then eval's importance sampling (1000 test images x 500 samples) against a plain
batched loop.

    .venv/bin/python benchmarks/bench_train.py [--rounds 2] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PLANAR_MNIST_OVERRIDES,
    TrainingEpochTimer,
    compose,
    interleaved,
    pin_threads,
    plain_training_steps,
    run_dirs,
    timed,
)

from nfvae.likelihoods import softplus  # noqa: E402
from nfvae.model import standard_normal_log_prob  # noqa: E402
from nfvae.objectives import importance_log_likelihood  # noqa: E402
from nfvae.training import build_datamodule, build_module, instantiate  # noqa: E402

OVERRIDES = [*PLANAR_MNIST_OVERRIDES, "trainer.max_epochs=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="epochs per contender")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only this many training images (quick checks)")
    args = parser.parse_args()
    pin_threads()
    cfg = compose([*run_dirs(args.data_dir, "nfvae-bench-"), *OVERRIDES])
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg.data)
    if args.train_limit:
        x, y = datamodule.splits["train"]
        datamodule.splits["train"] = (x[: args.train_limit], y[: args.train_limit])
    x_train = datamodule.splits["train"][0]
    n_train = len(x_train)

    framework = build_module(cfg, datamodule.data_shape)
    plain_model = build_module(cfg, datamodule.data_shape).model
    plain_model.load_state_dict(framework.model.state_dict())
    plain_optimizer = torch.optim.Adam(plain_model.parameters(), lr=1e-3)

    in_fit: list[float] = []

    def framework_epoch() -> float:
        logger = instantiate(cfg.logger)
        trainer = instantiate(cfg.trainer, logger=logger,
                              callbacks=[TrainingEpochTimer(in_fit)])
        return timed(lambda: trainer.fit(framework, datamodule=datamodule))

    def plain_epoch() -> float:
        return timed(lambda: plain_training_steps(plain_model, plain_optimizer, x_train))

    print(f"training: {n_train} images/epoch, {args.rounds} epochs each, interleaved")
    times = interleaved({"framework": framework_epoch, "plain": plain_epoch}, args.rounds)
    rate = {k: n_train * len(v) / sum(v) for k, v in times.items()}
    ratios = [p / f for f, p in zip(times["framework"], times["plain"])]
    print(f"framework: {rate['framework']:8.0f} samples/s")
    print(f"plain:     {rate['plain']:8.0f} samples/s")
    print(f"framework / plain throughput, whole fit() per epoch: "
          f"{rate['framework'] / rate['plain']:.3f} "
          f"(per-round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f})")
    epoch_ratios = [p / f for f, p in zip(in_fit, times["plain"])]
    print(f"framework in-epoch: {n_train * len(in_fit) / sum(in_fit):8.0f} samples/s; "
          f"framework / plain throughput, training epoch only: "
          f"{sum(times['plain']) / sum(in_fit):.3f} "
          f"(per-round: {', '.join(f'{r:.3f}' for r in epoch_ratios)}); "
          f"Trainer start-up and tear-down: "
          f"{statistics.median(f - e for f, e in zip(times['framework'], in_fit)):.2f} s per fit()")

    # --- importance sampling: eval.py's path vs a plain batched loop -----------------
    model = framework.model.eval()
    x_test = datamodule.splits["test"][0][:1000]
    num_samples, batch = 500, 100

    def framework_is() -> float:
        def run():
            for start in range(0, len(x_test), batch):
                importance_log_likelihood(model, x_test[start:start + batch], num_samples)
        return timed(run)

    @torch.no_grad()
    def plain_is() -> float:
        def run():
            for start in range(0, len(x_test), batch):
                x = x_test[start:start + batch]
                mu, log_sigma, context = model.encode(x)
                eps = torch.randn(num_samples, *mu.shape)
                z0 = (mu + log_sigma.exp() * eps).reshape(-1, mu.shape[1])
                # flow parameters once per image, as the framework computes them
                zK, sum_log_det = model.flow.forward_repeated(z0, context, num_samples)
                logits = model.decoder(zK).view(num_samples, len(x), -1)
                xs = x.flatten(1)
                log_px = (xs * logits - softplus(logits)).sum(-1)
                log_w = (log_px + standard_normal_log_prob(zK).view(num_samples, -1)
                         - (standard_normal_log_prob(eps) - log_sigma.sum(-1))
                         + sum_log_det.view(num_samples, -1))
                torch.logsumexp(log_w, 0)
        return timed(run)

    print(f"importance sampling: {len(x_test)} test images x {num_samples} samples")
    with torch.no_grad():
        is_times = interleaved({"framework": framework_is, "plain": plain_is}, 3)
    f_best, p_best = min(is_times["framework"]), min(is_times["plain"])
    print(f"framework IS: {f_best:.2f} s   plain IS: {p_best:.2f} s   "
          f"framework / plain speed: {p_best / f_best:.3f}")


if __name__ == "__main__":
    main()
