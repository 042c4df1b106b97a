"""What an image flow learned, as pure functions: module and images in, FigureSet out.

* ``samples/T_<T>``: 5x5 grids decoded from fixed noise eps scaled by each temperature
  T (Glow's reduced-temperature sampling, eps ~ N(0, T^2 I));
* ``flow/round_trip_error``: max |decode(encode(v)) - v| over the drawn images;
* ``flow/log_det/<part>``: histograms of each part's log|det| per image (nats):
  preprocessing, level_1 .. level_L (their steps and split priors), top_prior;
* ``levels/keep_coarse``: originals in the first row; below, the latents of the
  coarsest 1, 2, ... levels kept and the finer ones resampled at T = 0.7;
  ``levels/keep_fine``: the reverse, the finest levels kept and the coarser ones
  resampled, so what each scale encodes reads off the rows;
* ``interpolations/latent``: rows decoded from (1 - t) z_a + t z_b between pairs of
  images, t = 0 .. 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.image_flow.data import crop_images
from nfvae.viz.figures import image_grid
from nfvae.viz.vae import FigureSet

LEVEL_TEMPERATURE = 0.7


def dequantized_images(module, x: Tensor, generator: torch.Generator) -> Tensor:
    """Images in [0, 1] -> continuous v = (n + u) / K of the flow's (padded) shape, u
    drawn on the CPU from ``generator`` (the training noise's global stream untouched)."""
    u = torch.rand((len(x), *module.model_shape), generator=generator)
    return module.dequantize(x.to(module.device), u.to(module.device))


def sample_grids(module, noise: list[Tensor], temperatures, upscale: int = 1
                 ) -> dict[str, Tensor]:
    """{"samples/T_<T>": 5x5 grid} decoded from the same standard-normal ``noise``."""
    grids = {}
    for t in temperatures:
        images = module.decode([float(t) * eps for eps in noise]).clamp(0, 1)
        grids[f"samples/T_{float(t):g}"] = image_grid(images, nrow=5, upscale=upscale)
    return grids


def level_grids(module, latents: list[Tensor], noise: list[Tensor], originals: Tensor,
                upscale: int = 1) -> dict[str, Tensor]:
    """Rows that keep some levels of ``latents`` and take the others from ``noise``
    (standard normal, scaled to T = 0.7); see the module docstring."""
    num = len(latents)
    resampled = [LEVEL_TEMPERATURE * eps for eps in noise]

    def rows(keep_coarse: bool) -> Tensor:
        out = [originals.clamp(0, 1)]
        for kept in range(1, num):
            mixed = [latents[i] if ((i >= num - kept) if keep_coarse else (i < kept))
                     else resampled[i] for i in range(num)]
            out.append(module.decode(mixed).clamp(0, 1))
        return image_grid(torch.cat(out), nrow=len(originals), upscale=upscale)

    return {"levels/keep_coarse": rows(True), "levels/keep_fine": rows(False)}


def interpolation_grid(module, latents: list[Tensor], num_pairs: int, steps: int = 8,
                       upscale: int = 1) -> Tensor:
    """Rows decoded along straight lines in z between images 2i and 2i + 1."""
    flat = module.flow.flatten_latents(latents)
    num_pairs = min(num_pairs, len(flat) // 2)
    t = torch.linspace(0, 1, steps, device=flat.device, dtype=flat.dtype)[:, None]
    lines = [(1 - t) * flat[2 * i] + t * flat[2 * i + 1] for i in range(num_pairs)]
    images = module.decode(module.flow.unflatten_latents(torch.cat(lines))).clamp(0, 1)
    return image_grid(images, nrow=steps, upscale=upscale)


@torch.no_grad()
def image_flow_figures(module, x: Tensor, sample_noise: list[Tensor],
                       level_noise: list[Tensor], temperatures=(0.5, 0.7, 0.8, 1.0),
                       upscale: int = 1, num_level_images: int = 8,
                       num_interpolations: int = 4, seed: int = 0) -> FigureSet:
    """Every figure of the module docstring for the images ``x`` (N, *data_shape) in
    [0, 1]; the dequantization noise of ``x`` is drawn from ``seed``."""
    figures = FigureSet()
    figures.images.update(sample_grids(module, sample_noise, temperatures, upscale))
    padded = dequantized_images(module, x, torch.Generator().manual_seed(seed))
    v = crop_images(padded, module.data_shape[1:])
    latents = module.encode(v)
    figures.scalars["flow/round_trip_error"] = float((module.decode(latents) - v).abs().max())
    _, log_dets = module.flow.encode_parts(padded)
    names = (["preprocessing"] + [f"level_{i + 1}" for i in range(len(log_dets) - 2)]
             + ["top_prior"])
    for name, log_det in zip(names, log_dets, strict=True):
        figures.histograms[f"flow/log_det/{name}"] = log_det.float().cpu()
    n = min(num_level_images, len(x))
    figures.images.update(level_grids(
        module, [eps[:n] for eps in latents], [eps[:n] for eps in level_noise], v[:n],
        upscale))
    figures.images["interpolations/latent"] = interpolation_grid(
        module, latents, num_interpolations, upscale=upscale)
    return figures
