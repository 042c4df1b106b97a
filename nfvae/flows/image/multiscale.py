"""Multi-scale image flow: Glow (Kingma & Dhariwal 2018) and RealNVP (Dinh et al. 2017).

In the data direction, for levels l = 1..L, from v in [0, 1)^(C, H, W):

    y = preprocess(v)                         (centre, or logit with alpha)
    level l:  [RealNVP: K checkerboard couplings] -> squeeze -> K steps
              -> split (l < L): half the channels leave as eps_l under p(z_l | h_l)
    top:      eps_L = standardised last latent under the learned top prior,

    log p(v) = sum_l log N(eps_l; 0, I) + log|d(eps_1..eps_L)/dv|,

every change of variables (logit, steps, the priors' standardisations) in the
log-det. The latent is a list [eps_1, ..., eps_L] of per-level tensors of shapes
``latent_shapes``, finest first, each N(0, I) under the model; ``flatten_latents``
and ``unflatten_latents`` turn it into one (B, D) vector and back. ``encode`` and
``decode`` are exact inverses; ``sample(n, T)`` decodes eps ~ N(0, T^2 I).

The level sizes: H and W must be divisible by 2^L (every level squeezes). Channels:
C -> 4C at a squeeze, half of them leave at a split, so level l works on
2^(l+1) C channels at (H / 2^l, W / 2^l).

ActNorm layers start from data: call ``initialize(v)`` once on a first batch
before training (``log_prob`` and ``encode`` never change the model).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nfvae.flows.actnorm import initialize_by_inverse
from nfvae.flows.base import FlowSequence
from nfvae.flows.image.coupling import COUPLINGS
from nfvae.flows.image.permutation import PERMUTATIONS
from nfvae.flows.image.preprocess import preprocessing
from nfvae.flows.image.priors import SplitPrior, TopPrior
from nfvae.flows.image.squeeze import squeeze, unsqueeze
from nfvae.flows.image.steps import glow_steps, realnvp_steps

KINDS = ("glow", "realnvp")


class Level(nn.Module):
    """One scale: optional steps before the squeeze, squeeze, steps, optional split."""

    def __init__(self, before: FlowSequence, after: FlowSequence, split: SplitPrior | None):
        super().__init__()
        self.before, self.after, self.split = before, after, split

    def encode(self, h: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """h -> (kept h, eps leaving here or None, log_det)."""
        h, log_det = self.before.inverse(h)
        h, ld_after = self.after.inverse(squeeze(h))
        log_det = log_det + ld_after
        if self.split is None:
            return h, None, log_det
        h, eps, ld_split = self.split.split(h)
        return h, eps, log_det + ld_split

    def decode(self, h: Tensor, eps: Tensor | None) -> Tensor:
        if self.split is not None:
            h, _ = self.split.join(h, eps)
        h, _ = self.after(h)
        h, _ = self.before(unsqueeze(h))
        return h


class MultiscaleFlow(nn.Module):
    """Glow or RealNVP over images of ``image_shape`` (C, H, W); see the module docstring."""

    def __init__(self, image_shape: tuple[int, int, int], levels: int = 3,
                 steps_per_level: int = 8, hidden_channels: int = 128, kind: str = "glow",
                 coupling: str = "affine", permutation: str | None = None,
                 logit_alpha: float | None = None, max_log_scale: float = 3.0,
                 prior_max_log_scale: float | None = None):
        super().__init__()
        c, h, w = self.image_shape = tuple(int(s) for s in image_shape)
        _check_options(self.image_shape, levels, steps_per_level, kind, coupling, permutation)
        self.preprocess = preprocessing(logit_alpha)
        self.levels = nn.ModuleList()
        shapes = []
        for level in range(levels):
            last = level == levels - 1
            if kind == "glow":
                before = FlowSequence([])
                after = glow_steps(4 * c, steps_per_level, hidden_channels, coupling,
                                   permutation or "invconv", max_log_scale)
            else:
                before = realnvp_steps(c, steps_per_level, hidden_channels, coupling,
                                       max_log_scale, "checkerboard")
                after = realnvp_steps(4 * c, steps_per_level, hidden_channels, coupling,
                                      max_log_scale, "channel")
            c, h, w = 4 * c, h // 2, w // 2
            split = None if last else SplitPrior(c, prior_max_log_scale)
            self.levels.append(Level(before, after, split))
            if not last:
                shapes.append((c // 2, h, w))
                c = c - c // 2
        shapes.append((c, h, w))
        self.top = TopPrior((c, h, w), prior_max_log_scale)
        self.latent_shapes: list[tuple[int, int, int]] = shapes

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def _check_images(self, v: Tensor) -> None:
        if v.dim() != 4 or tuple(v.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(f"expected images of shape (B, {c}, {h}, {w}), "
                             f"got {tuple(v.shape)}")

    def encode_parts(self, v: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """v (B, C, H, W) in [0, 1) -> ([eps_1, ..., eps_L], log-dets (B,) of its parts:
        [preprocessing, level 1, ..., level L, top prior]), for per-level diagnostics."""
        self._check_images(v)
        h, log_det = self.preprocess.inverse(v)
        latents, log_dets = [], [log_det]
        for level in self.levels:
            h, eps, log_det = level.encode(h)
            log_dets.append(log_det)
            if eps is not None:
                latents.append(eps)
        eps, log_det = self.top.standardize(h)
        return latents + [eps], log_dets + [log_det]

    def encode_with_log_det(self, v: Tensor) -> tuple[list[Tensor], Tensor]:
        """v -> ([eps_1, ..., eps_L], log|d eps / dv| (B,))."""
        latents, log_dets = self.encode_parts(v)
        return latents, torch.stack(log_dets).sum(0)

    def encode(self, v: Tensor) -> list[Tensor]:
        """v -> [eps_1, ..., eps_L], finest level first; exact inverse of ``decode``."""
        return self.encode_with_log_det(v)[0]

    def decode(self, latents: list[Tensor]) -> Tensor:
        """[eps_1, ..., eps_L] -> v (B, C, H, W)."""
        if len(latents) != len(self.latent_shapes):
            raise ValueError(f"decode expects {len(self.latent_shapes)} latents (one per level), "
                             f"got {len(latents)}")
        for eps, shape in zip(latents, self.latent_shapes, strict=True):
            if eps.dim() != 4 or tuple(eps.shape[1:]) != shape:
                raise ValueError(f"latent shapes must be {self.latent_shapes} after the batch "
                                 f"dimension, got {[tuple(e.shape) for e in latents]}")
        h, _ = self.top.unstandardize(latents[-1])
        splits = latents[:-1] + [None]
        for level, eps in zip(reversed(self.levels), reversed(splits), strict=True):
            h = level.decode(h, eps)
        return self.preprocess(h)[0]

    def log_prob(self, v: Tensor) -> Tensor:
        """log p(v) in nats per image (B,), the density of the [0, 1)-scaled data."""
        latents, log_det = self.encode_with_log_det(v)
        log_normal = sum(-0.5 * (eps.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)
                         for eps in latents)
        return log_normal + log_det

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """n images decoded from eps ~ N(0, T^2 I) (Glow's temperature T); without the
        logit they may leave [0, 1) slightly: clamp them to display."""
        ref = self.top.mean
        latents = [temperature * torch.randn((n, *shape), generator=generator,
                                             dtype=ref.dtype, device=ref.device)
                   for shape in self.latent_shapes]
        return self.decode(latents)

    @torch.no_grad()
    def initialize(self, v: Tensor) -> None:
        """Data-dependent start: every ActNorm standardises this batch's activations,
        per channel (over all DDP ranks' batches together)."""
        with initialize_by_inverse(self):
            self.encode(v)

    def flatten_latents(self, latents: list[Tensor]) -> Tensor:
        """[eps_1, ..., eps_L] -> (B, D)."""
        return torch.cat([eps.flatten(1) for eps in latents], dim=1)

    def unflatten_latents(self, flat: Tensor) -> list[Tensor]:
        """(B, D) -> [eps_1, ..., eps_L]."""
        sizes = [math.prod(shape) for shape in self.latent_shapes]
        return [chunk.reshape(flat.shape[0], *shape)
                for chunk, shape in zip(flat.split(sizes, dim=1), self.latent_shapes, strict=True)]


def _check_options(shape: tuple[int, ...], levels: int, steps: int, kind: str, coupling: str,
                   permutation: str | None) -> None:
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {shape}")
    if levels < 1 or steps < 1:
        raise ValueError(f"levels and steps_per_level must be >= 1, got {levels} and {steps}")
    if shape[1] % 2 ** levels or shape[2] % 2 ** levels:
        raise ValueError(f"{levels} levels squeeze {levels} times: height and width must be "
                         f"divisible by {2 ** levels}, got {shape[1]}x{shape[2]}; pad the "
                         "images (MNIST 28 -> 32) or use fewer levels")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    if kind == "realnvp" and permutation is not None:
        raise ValueError("realnvp alternates its masks and takes no permutation; "
                         f"got permutation={permutation!r} (it applies to kind=glow)")
    if permutation is not None and permutation not in PERMUTATIONS:
        raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")
