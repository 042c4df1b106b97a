"""The 2-D targets: formulas against the paper, densities against their samples,
normalisers against independent integrations, and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfvae.toy.data import BaseNoiseDataModule, TargetSamplesDataModule
from nfvae.toy.targets import (
    U1,
    U2,
    U3,
    U4,
    Checkerboard,
    EightGaussians,
    Rings,
    SampleTarget,
    TwoMoons,
)

SAMPLE_TARGETS = [TwoMoons, Rings, EightGaussians, Checkerboard]


def paper_energy(name: str, z: np.ndarray) -> np.ndarray:
    """Rezende & Mohamed (2015), Table 1, written out again in numpy."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "U1":
        return (0.5 * ((np.linalg.norm(z, axis=1) - 2) / 0.4) ** 2
                - np.log(np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2)
                         + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)))
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "U3":
        return -np.log(np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2)
                       + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    return -np.log(np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2)
                   + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))


@pytest.mark.parametrize("target", [U1(), U2(), U3(), U4()], ids=lambda t: t.name)
def test_energies_are_the_papers_inside_the_box(target):
    z = torch.rand(2000, 2, dtype=torch.float64) * 8 - 4  # [-4, 4]^2, where the wall is 0
    expected = -paper_energy(target.name, z.numpy())
    np.testing.assert_allclose(target.log_prob(z).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_wall_makes_sine_energies_normalisable_outside_the_box():
    z = torch.tensor([[5.0, math.sin(2 * math.pi * 5 / 4)], [7.0, math.sin(2 * math.pi * 7 / 4)]],
                     dtype=torch.float64)
    # On the wave the paper's U2 is 0 for every z1: only the wall lowers the density.
    torch.testing.assert_close(U2().log_prob(z), -0.5 * (torch.tensor([1.0, 3.0]) / 0.2) ** 2,
                               check_dtype=False)
    assert U1.has_wall is False


@pytest.mark.parametrize("target", [U1(), U2(), U3(), U4()], ids=lambda t: t.name)
def test_energy_normaliser_converges(target):
    """The 1601^2 grid over [-8, 8]^2 agrees with a finer, wider grid to 1e-4 nats."""
    finer = target.grid_log_normalizer(half_width=10.0, points=2401)
    assert abs(target.log_normalizer - finer) < 1e-4


def test_u1_normaliser_matches_polar_quadrature():
    """An independent integral: U1 in polar coordinates, r dr dtheta on a 1-D tensor grid."""
    r = torch.linspace(0, 6, 3001, dtype=torch.float64)
    theta = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)[:-1]
    rr, tt = torch.meshgrid(r, theta, indexing="ij")
    z = torch.stack([rr * torch.cos(tt), rr * torch.sin(tt)], -1).reshape(-1, 2)
    integrand = U1().log_prob(z).exp().view(rr.shape) * rr
    integral = torch.trapezoid(integrand.sum(1) * (2 * math.pi / len(theta)), r)
    assert abs(U1().log_normalizer - math.log(integral)) < 1e-4


@pytest.mark.parametrize("cls", SAMPLE_TARGETS)
def test_sample_target_density_integrates_to_one(cls):
    target = cls()  # cells of 0.02: the checkerboard's edges fall on cell edges
    assert abs(target.grid_log_normalizer(half_width=5.0, points=500)) < 2e-3


@pytest.mark.parametrize("cls", SAMPLE_TARGETS)
def test_samples_follow_the_density(cls):
    """Bin probabilities from 200k samples vs the density integrated over each bin:
    total variation below 0.02 (sampling noise alone is ~0.01)."""
    target = cls()
    x, labels = target.sample(200_000, torch.Generator().manual_seed(0))
    assert x.shape == (200_000, 2) and x.dtype == torch.float32 and labels.dtype == torch.long
    edges = torch.linspace(-4.5, 4.5, 19, dtype=torch.float64)
    counts, _ = torch.histogramdd(x.double(), bins=[edges, edges])
    empirical = counts / len(x)
    sub = 20  # midpoint rule inside each bin
    fine = torch.linspace(-4.5, 4.5, 18 * sub + 1, dtype=torch.float64)
    centres = 0.5 * (fine[1:] + fine[:-1])
    grid = torch.cartesian_prod(centres, centres)
    cell = (fine[1] - fine[0]) ** 2
    density = target.log_prob(grid).exp().view(18 * sub, 18 * sub) * cell
    expected = density.view(18, sub, 18, sub).sum((1, 3))
    assert 0.5 * (empirical - expected).abs().sum() < 0.02


def test_rings_density_matches_brute_force_angle_quadrature():
    target = Rings()
    z = torch.randn(300, 2, dtype=torch.float64) * 2
    angles = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)[:-1]
    s2 = target.noise**2
    per_ring = []
    for r, w in zip(target.radii, target.weights):
        centres = r * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
        log_n = -0.5 * (z[:, None, :] - centres[None]).pow(2).sum(-1) / s2
        per_ring.append(torch.logsumexp(log_n, 1) - math.log(len(angles))
                        - math.log(2 * math.pi * s2) + w.log())
    expected = torch.logsumexp(torch.stack(per_ring), 0)
    torch.testing.assert_close(target.log_prob(z), expected, rtol=1e-8, atol=1e-8)


def test_two_moons_quadrature_has_converged():
    z = torch.randn(500, 2, dtype=torch.float64) * 2
    coarse, fine = TwoMoons().log_prob(z), TwoMoons(quadrature=1024).log_prob(z)
    mass = coarse.exp() > 1e-4  # where there is any density to speak of
    assert (coarse - fine)[mass].abs().max() < 1e-6


def test_checkerboard_is_uniform_on_black_squares():
    target = Checkerboard()
    x, labels = target.sample(10_000, torch.Generator().manual_seed(1))
    assert torch.isfinite(target.log_prob(x)).all()
    torch.testing.assert_close(target.log_prob(x), torch.full((len(x),), -math.log(32.0)))
    assert set(labels.tolist()) == set(range(8))
    assert target.log_prob(torch.tensor([[0.5, 0.5]])).item() == -math.inf  # a white square


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        U1().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="low < high"):
        TwoMoons(bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="noise > 0"):
        TwoMoons(noise=0.0)
    with pytest.raises(ValueError, match="radius > 0"):
        EightGaussians(radius=-1.0)
    with pytest.raises(TypeError, match="cannot be sampled"):
        TargetSamplesDataModule(U1())
    with pytest.raises(ValueError, match="num_val must be >= 1"):
        TargetSamplesDataModule(TwoMoons(), num_val=0)
    with pytest.raises(ValueError, match="no fixed train split"):
        BaseNoiseDataModule(U1()).split("train")
    assert not isinstance(U1(), SampleTarget)


def test_datamodules_yield_fixed_evaluation_splits_and_fresh_noise():
    samples = TargetSamplesDataModule(TwoMoons(), num_train=500, num_val=100, num_test=100,
                                      batch_size=50, seed=3)
    again = TargetSamplesDataModule(TwoMoons(), num_train=500, num_val=100, num_test=100,
                                    batch_size=50, seed=3)
    samples.setup()
    torch.testing.assert_close(samples.split("val")[0], again.split("val")[0])
    assert not torch.equal(samples.split("val")[0], samples.split("test")[0])
    assert samples.data_shape == (2,)
    noise = BaseNoiseDataModule(U1(), steps_per_epoch=3, batch_size=8, num_val=16, num_test=16)
    batches = list(noise.train_dataloader())
    assert len(batches) == 3 and batches[0][0].shape == (8, 2)
    assert not torch.equal(batches[0][0], batches[1][0])
    assert noise.split("val")[0].shape == (16, 2)
