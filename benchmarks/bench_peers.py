"""nfvae against a plain PyTorch loop and the peers (normflows, pythae), same model.

The model of issue 16: MNIST with dynamic binarization, MLP 784-300-300 (ReLU),
latent 64, planar K=10, batch 100, Adam 1e-3, beta = 1. Contenders:

* ``plain-amortized`` / ``plain-global``: a hand-written PyTorch model and loop, the
  leanest a researcher would write: one linear head from the context to all K layers'
  raw planar parameters (amortized) or one (K, 2D+1) parameter (global), the planar
  constraint on all layers at once, data preloaded as uint8, batches drawn by index;
* ``nfvae-amortized`` / ``nfvae-global``: ``nfvae.training.train(cfg)`` on the real
  conf/ as a user runs it (TensorBoard logger on at the shipped ``log_every_n_steps``),
  with validation, test and the figure callbacks off;
* ``normflows-global``: the plain loop with ``normflows.flows.Planar`` layers (when
  normflows is installed: ``pip install nfvae[bench]``);
* ``pythae-global``: pythae's ``VAE_LinNF`` (planar layers) with the same MLPs in the
  plain loop (when pythae is installed).

Each contender runs in its own process (so peak RSS is its own) once per round, the
order alternating between rounds, so load on a shared machine hits all of them; ratios
are taken within a round. Per run: training samples/s over ``--steps`` steps after
``--warmup`` steps, start-up (process start to the first step), the time of the
importance-sampled NLL of 1000 test images x 500 samples (nfvae: its eval path,
``nfvae.evaluation.example_nll``; the others: a plain batched loop), that NLL, and the
peak RSS.

    NFVAE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_peers.py \
        [--rounds 3] [--steps 300] [--threads 1 2] [--compile] [--only plain-amortized ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()


def now() -> tuple[float, float]:
    """(wall, CPU) seconds: on a loaded machine the process's CPU time per step still
    measures the work done, where wall time also counts waiting for a core."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

D, H, K, BATCH, LR = 64, 300, 10, 100, 1e-3
IS_IMAGES, IS_SAMPLES, IS_BATCH = 1000, 500, 100
CONTENDERS = ["plain-amortized", "nfvae-amortized", "plain-global", "nfvae-global",
              "normflows-global", "pythae-global"]
# Ratios: each contender against the plain loop of the same work.
BASELINE = {"amortized": "plain-amortized", "global": "plain-global"}
# With --before DIR: nfvae from another checkout (before a change), in the same rounds.
BEFORE = ["before-amortized", "before-global"]


def peers_found() -> dict[str, bool]:
    import importlib.util
    return {name: importlib.util.find_spec(name) is not None for name in ("normflows", "pythae")}


# ---------------------------------------------------------------- data (plain loaders)
def read_idx(path: Path):
    import numpy as np
    import torch
    raw = path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape))


def data_dir() -> Path:
    path = Path(os.environ.get("NFVAE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {path}/MNIST/raw; set NFVAE_DATA_DIR")
    return path.resolve()


def mnist_uint8():
    """Train (60000, 784) and the first IS_IMAGES test images, uint8."""
    raw = data_dir() / "MNIST" / "raw"
    train = read_idx(raw / "train-images-idx3-ubyte").reshape(-1, 784)
    test = read_idx(raw / "t10k-images-idx3-ubyte").reshape(-1, 784)[:IS_IMAGES]
    return train, test


# ------------------------------------------------------------------------ plain model
def plain_model(kind: str, flows=None):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PlainVAE(nn.Module):
        """Encoder -> q0 -> K planar layers -> decoder, written out by hand."""

        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(784, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU())
            self.to_mu, self.to_log_sigma = nn.Linear(H, D), nn.Linear(H, D)
            self.flows = nn.ModuleList(flows) if flows is not None else None
            if flows is None and kind == "amortized":
                self.head = nn.Linear(H, K * (2 * D + 1))
            elif flows is None:
                self.raw = nn.Parameter(torch.empty(1, K, 2 * D + 1).uniform_(
                    -1 / math.sqrt(D), 1 / math.sqrt(D)))
            self.decoder = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                         nn.Linear(H, 784))

        def planar_params(self, context):
            raw = (self.head(context).view(-1, K, 2 * D + 1) if kind == "amortized"
                   else self.raw)
            u, w, b = raw.split([D, D, 1], -1)
            wu = (w * u).sum(-1, keepdim=True)
            u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(
                1e-12)
            return u_hat, w, b, (w * u_hat).sum(-1, keepdim=True)

        def flow(self, z, context):
            """z (S, B, D) -> zK, sum_log_det (S, B); parameters broadcast over S."""
            if self.flows is not None:
                shape = z.shape
                z = z.reshape(-1, D)
                total = z.new_zeros(len(z))
                for layer in self.flows:
                    z, log_det = layer(z)
                    total = total + log_det
                return z.view(shape), total.view(shape[:2])
            u_hat, w, b, wu_hat = self.planar_params(context)
            total = 0
            for k in range(K):
                h = torch.tanh((z * w[:, k]).sum(-1, keepdim=True) + b[:, k])
                z = z + u_hat[:, k] * h
                total = total + torch.log((1 + (1 - h * h) * wu_hat[:, k]).abs()).squeeze(-1)
            return z, total

        def log_weights(self, x, num_samples):
            """log p(x, zK) - log qK(zK|x), shape (S, B)."""
            context = self.encoder(x)
            mu, log_sigma = self.to_mu(context), self.to_log_sigma(context)
            eps = torch.randn(num_samples, *mu.shape, device=mu.device)
            zK, sum_log_det = self.flow(mu + log_sigma.exp() * eps, context)
            logits = self.decoder(zK)
            log_px = (x * logits - F.softplus(logits)).sum(-1)
            log_pz = -0.5 * zK.pow(2).sum(-1)
            log_q0 = -0.5 * eps.pow(2).sum(-1) - log_sigma.sum(-1)
            return log_px + log_pz - log_q0 + sum_log_det  # the 2 pi terms cancel

    return PlainVAE()


def plain_train(model, train_u8, steps: int, warmup: int, step_times: list[float]):
    import torch
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.randperm(len(train_u8))
    for step in range(warmup + steps):
        if step == warmup:
            step_times.append(now())
        index = order[(step * BATCH) % len(order):][:BATCH]
        p = train_u8[index].float().div_(255)
        x = (torch.rand_like(p) < p).float()
        loss = -model.log_weights(x, 1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step_times.append(now())


def plain_nll(model, test_u8) -> tuple[float, float]:
    """A plain batched IS loop: (seconds, mean NLL in nats)."""
    import torch
    torch.manual_seed(1)
    x_all = torch.bernoulli(test_u8.float() / 255, generator=torch.Generator().manual_seed(0))
    start, total = now(), 0.0
    with torch.no_grad():
        for i in range(0, len(x_all), IS_BATCH):
            x = x_all[i:i + IS_BATCH].to(next(model.parameters()).device)
            log_w = model.log_weights(x, IS_SAMPLES)
            # log p(x, z) - log q(z|x) with the 2 pi terms cancelled; log S for the mean.
            total -= float((torch.logsumexp(log_w, 0) - math.log(IS_SAMPLES)).sum())
    return since(start), total / len(x_all)


# -------------------------------------------------------------------------- pythae
def pythae_model():
    import torch
    from pythae.models import VAE_LinNF, VAE_LinNFConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(784, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU())
            self.mu, self.log_var = nn.Linear(H, D), nn.Linear(H, D)

        def forward(self, x):
            h = self.net(x.reshape(len(x), -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                     nn.Linear(H, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(len(z), 1, 28, 28))

    config = VAE_LinNFConfig(input_dim=(1, 28, 28), latent_dim=D, flows=["Planar"] * K,
                             reconstruction_loss="bce")
    return VAE_LinNF(config, encoder=Encoder(), decoder=Decoder()), torch


def pythae_run(train_u8, test_u8, steps, warmup, step_times):
    model, torch = pythae_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.randperm(len(train_u8))
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            step_times.append(now())
        index = order[(step * BATCH) % len(order):][:BATCH]
        p = train_u8[index].float().div_(255)
        x = (torch.rand_like(p) < p).float().view(-1, 1, 28, 28)
        loss = model({"data": x}, epoch=1).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step_times.append(now())
    model.eval()
    x_all = torch.bernoulli(test_u8.float() / 255,
                            generator=torch.Generator().manual_seed(0)).view(-1, 1, 28, 28)
    start = now()
    with torch.no_grad():
        nll = float(model.get_nll(x_all, n_samples=IS_SAMPLES, batch_size=IS_BATCH))
    return since(start), nll


# --------------------------------------------------------------------------- nfvae
NFVAE_OVERRIDES = [
    "data=mnist", "data.download=false", "data.batch_size=100",
    "model.latent_dim=64", "model.encoder.hidden_dims=[300,300]",
    "model.decoder.hidden_dims=[300,300]",
    "flow=planar", "flow.num_layers=10",
    "optimizer.lr=1e-3", "objective.beta_start=1.0", "objective.warmup_epochs=0",
    "trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.enable_checkpointing=false", "callbacks=none", "test.enabled=false",
    "+callbacks.timer._target_=bench_peers.StepTimer",
]


def nfvae_run(kind: str, steps: int, warmup: int, step_times: list[float], compile_: bool | None,
              test_u8, rss: list[float], extra: tuple[str, ...] = (), device: str = "cpu"):
    """``extra``: more overrides (bench_gpu.py's levers); ``compile_`` None: as they say."""
    import tempfile

    import pytorch_lightning as pl
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from nfvae.evaluation import example_nll
    from nfvae.training import train

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx in (0, warmup):
                step_times.append(now())

        def on_train_end(self, trainer, pl_module):
            step_times.append(now())
            StepTimer.module = pl_module
            StepTimer.train_rss_mb = peak_rss_mb()

    sys.modules["bench_peers"] = sys.modules[__name__]
    globals()["StepTimer"] = StepTimer
    out = tempfile.mkdtemp(prefix="nfvae-peers-")
    overrides = [*NFVAE_OVERRIDES, f"flow.amortized={str(kind == 'amortized').lower()}",
                 f"trainer.limit_train_batches={warmup + steps}",
                 f"paths.output_dir={out}", f"data.data_dir={data_dir()}", *extra]
    # The driver starts the worker in the checkout to measure (--before: the other one).
    with initialize_config_dir(config_dir=str(Path.cwd() / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    # training.compile; checkouts from before it moved there have model.compile
    group = cfg.training if "compile" in cfg.get("training", {}) else cfg.model
    if compile_ is not None:
        with open_dict(group):
            group.compile = bool(compile_)
    train(cfg)
    rss.append(StepTimer.train_rss_mb)
    model = StepTimer.module.model.to(device).eval()  # Lightning hands it back on the CPU
    x_all = torch.bernoulli(test_u8.float() / 255, generator=torch.Generator().manual_seed(0))
    start, total = now(), 0.0
    for i in range(0, len(x_all), IS_BATCH):
        x = x_all[i:i + IS_BATCH].view(-1, *model.data_shape).to(device)
        total += float(example_nll(model, x, torch.arange(i, i + len(x)), IS_SAMPLES).sum())
    return since(start), total / len(x_all)


# -------------------------------------------------------------------------- worker
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, threads: int, steps: int, warmup: int, compile_: bool) -> dict:
    import torch
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    kind = name.split("-")[1]
    train_u8, test_u8 = mnist_uint8()
    step_times: list[float] = []
    rss: list[float] = []
    if name.startswith(("nfvae", "before")):
        is_s, nll = nfvae_run(kind, steps, warmup, step_times, compile_, test_u8, rss)
        first_step, step_times = step_times[0], step_times[1:]
    elif name.startswith("pythae"):
        first_step = now()
        is_s, nll = pythae_run(train_u8, test_u8, steps, warmup, step_times)
    else:
        flows = None
        if name.startswith("normflows"):
            import normflows
            flows = [normflows.flows.Planar((D,)) for _ in range(K)]
        model = plain_model(kind, flows)
        first_step = now()
        plain_train(model, train_u8, steps, warmup, step_times)
        rss.append(peak_rss_mb())
        is_s, nll = plain_nll(model.eval(), test_u8)
    if not rss:  # pythae: training and scoring in one call
        rss.append(float("nan"))
    train_wall, train_cpu = (b - a for a, b in zip(step_times[0], step_times[-1]))
    return {"name": name, "threads": threads, "samples_per_s": steps * BATCH / train_wall,
            "samples_per_cpu_s": steps * BATCH / train_cpu,
            "startup_s": first_step[0] - START, "is_s": is_s[0], "is_cpu_s": is_s[1], "nll": nll,
            "train_rss_mb": rss[0], "peak_rss_mb": peak_rss_mb(), "loadavg": os.getloadavg()[0]}


# -------------------------------------------------------------------------- driver
def run_worker(name: str, threads: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--threads",
           str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--is-images", str(args.is_images)]
    if args.compile and name.startswith(("nfvae", "before")):
        cmd.append("--compile")
    checkout = Path(args.before).resolve() if name.startswith("before") else ROOT
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(checkout)}
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], rounds: int) -> str:
    """Medians over rounds; ratios are taken within each round against the plain loop of
    the same work (amortized or global), then their median (the per-round values in
    brackets): on wall time and on CPU time."""
    names = list(dict.fromkeys(r["name"] for r in results))
    by = {(r["name"], r["round"]): r for r in results}
    lines = ["| | samples/s | vs plain, wall (per round) | samples/CPU-s | vs plain, CPU "
             f"(per round) | start-up, s | IS-NLL {IS_IMAGES} x {IS_SAMPLES}: wall s | "
             "CPU s | vs plain IS, CPU | test NLL | peak RSS training, MB | peak RSS, MB |",
             "|---|" + "---:|" * 11]
    for name in names:
        runs = [by[name, r] for r in range(rounds) if (name, r) in by]
        base = BASELINE[name.split("-")[1]]
        paired = [(by[name, r], by[base, r]) for r in range(rounds)
                  if (name, r) in by and (base, r) in by]

        def med(key):
            return statistics.median(r[key] for r in runs)

        def ratio(key, inverse=False):
            values = [(b[key] / a[key]) if inverse else (a[key] / b[key]) for a, b in paired]
            if not values:
                return f"n/a (no {base})"
            return f"{statistics.median(values):.2f} ({', '.join(f'{x:.2f}' for x in values)})"
        lines.append(
            f"| {name} | {med('samples_per_s'):.0f} | {ratio('samples_per_s')} | "
            f"{med('samples_per_cpu_s'):.0f} | {ratio('samples_per_cpu_s')} | "
            f"{med('startup_s'):.1f} | {med('is_s'):.1f} | {med('is_cpu_s'):.1f} | "
            f"{ratio('is_cpu_s', inverse=True)} | {med('nll'):.2f} | "
            f"{med('train_rss_mb'):.0f} | {med('peak_rss_mb'):.0f} |")
    return "\n".join(lines)


def main() -> None:
    global IS_IMAGES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--is-images", type=int, default=IS_IMAGES,
                        help="test images scored (fewer for quick checks)")
    parser.add_argument("--compile", action="store_true", help="nfvae with training.compile=true")
    parser.add_argument("--only", nargs="+", default=None, help="contenders to run")
    parser.add_argument("--before", default=None,
                        help="another checkout of nfvae (e.g. main) to run in the same rounds")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    IS_IMAGES = args.is_images
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads[0], args.steps, args.warmup,
                                args.compile)))
        return
    found = peers_found()
    print("peers found: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in found.items()))
    contenders = CONTENDERS + (BEFORE if args.before else [])
    names = [n for n in (args.only or contenders)
             if n.split("-")[0] not in found or found[n.split("-")[0]]]
    for threads in args.threads:
        results = []
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                result = {**run_worker(name, threads, args), "round": r}
                results.append(result)
                print(f"  threads {threads} round {r + 1} {name:<18s} "
                      f"{result['samples_per_s']:6.0f} samples/s "
                      f"({result['samples_per_cpu_s']:.0f} per CPU-s)  IS {result['is_s']:5.1f} s ({result['is_cpu_s']:.1f} CPU-s)  "
                      f"NLL {result['nll']:.2f}  RSS {result['peak_rss_mb']:.0f} MB  "
                      f"load {result['loadavg']:.1f}", flush=True)
        print(f"\n{threads} thread(s), {args.rounds} rounds, {args.steps} timed steps"
              f"{' (nfvae compiled)' if args.compile else ''}; 1-min loadavg over the runs "
              f"{min(r['loadavg'] for r in results):.1f}-{max(r['loadavg'] for r in results):.1f}"
              f" on {os.cpu_count()} CPUs\n")
        print(table(results, args.rounds), flush=True)


if __name__ == "__main__":
    main()
