"""Multi-scale image flows (nfvae.flows.image): exact log-dets, exact inverses, a
normalised density, ActNorm's data-dependent start, and the data path's conventions."""

from __future__ import annotations

import math

import pytest
import torch

from nfvae.flows import uninitialized_actnorms
from nfvae.flows.image import (
    ActNorm2d,
    MultiscaleFlow,
    SplitPrior,
    TopPrior,
    bits_per_dim,
    dequantize,
    squeeze,
    unsqueeze,
)

# Every step type: both kinds, both couplings, each of Glow's channel mixers; the logit
# preprocessing on some, the centring on the others.
CONFIGS = [
    dict(kind="glow", coupling="affine", permutation="invconv", logit_alpha=0.05),
    dict(kind="glow", coupling="affine", permutation="reverse"),
    dict(kind="glow", coupling="affine", permutation="shuffle"),
    dict(kind="glow", coupling="additive", permutation="invconv"),
    dict(kind="glow", coupling="additive", permutation="shuffle", logit_alpha=1e-6),
    dict(kind="realnvp", coupling="affine", logit_alpha=0.05),
    dict(kind="realnvp", coupling="additive"),
    # The priors' soft clamp (tight enough that the drawn N(0, 0.3^2) weights reach it).
    dict(kind="glow", coupling="affine", permutation="invconv", prior_max_log_scale=1.0),
    dict(kind="realnvp", coupling="affine", prior_max_log_scale=1.0),
]


def config_id(cfg: dict) -> str:
    return "-".join(str(v) for v in cfg.values())


def random_model(cfg: dict, shape=(1, 4, 4), levels=2, scale=0.3, steps=2, hidden=6,
                 dtype=torch.float64, seed=0, start_data=None) -> MultiscaleFlow:
    """A model after its data-dependent start whose zero-initialised parameters (the
    couplings' last convolutions, the split and top priors) are drawn from N(0, scale^2),
    so that no layer is the identity (0.3 is large beside a 3x3 convolution's default
    initialisation, 1/sqrt(9 C) ~ 0.1 here: the latents end up hundreds of units away
    from the pixels)."""
    torch.manual_seed(seed)
    model = MultiscaleFlow(shape, levels=levels, steps_per_level=steps, hidden_channels=hidden,
                           **cfg).to(dtype)
    model.initialize(torch.rand(32, *shape, dtype=dtype) if start_data is None
                     else start_data.to(dtype))
    with torch.no_grad():
        zero = [p for p in model.parameters() if not p.any()]
        assert zero, "expected zero-initialised layers"
        for p in zero:
            p.normal_(0.0, scale)
    return model


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_log_det_equals_brute_force_jacobian(cfg):
    """x (16 numbers) -> (eps_1, eps_2) flattened is a bijection of R^16 through the
    preprocessing, squeezes, steps, split and priors: its summed log-det is log|det J|."""
    model = random_model(cfg)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    _, log_det = model.encode_with_log_det(x)

    def to_flat_latent(v):
        return model.flatten_latents(model.encode(v.reshape(1, 1, 4, 4))).reshape(16)

    for b in range(2):
        jac = torch.autograd.functional.jacobian(to_flat_latent, x[b].reshape(16))
        _, log_abs_det = torch.linalg.slogdet(jac)
        assert abs(log_det[b].item() - log_abs_det.item()) < 1e-8
    # At the zero start every log-det is a constant; the drawn layers make it depend on x.
    assert abs(log_det[0] - log_det[1]) > 1e-2


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_encode_decode_are_exact_inverses(cfg, dtype, tol):
    model = random_model(cfg, shape=(2, 8, 8), dtype=dtype)
    x = torch.rand(4, 2, 8, 8, dtype=dtype)
    with torch.no_grad():
        latents = model.encode(x)
        assert [tuple(e.shape[1:]) for e in latents] == model.latent_shapes
        torch.testing.assert_close(model.decode(latents), x, atol=tol, rtol=0)
        flat = model.flatten_latents(latents)
        assert flat.shape == (4, 128)
        assert all(torch.equal(a, b) for a, b in zip(model.unflatten_latents(flat), latents,
                                                     strict=True))
    # Not a near-identity map: the latents are far from the (centred) pixels.
    assert (model.flatten_latents(latents) - (x - 0.5).flatten(1)).abs().max() > 10.0


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_decode_then_encode_returns_the_latents(cfg):
    """The other way round, at weights (0.1) where decoding N(0, I) noise stays in
    range: at 0.3 samples reach 1e6 or saturate the logit's sigmoid."""
    model = random_model(cfg, shape=(2, 8, 8), scale=0.1)
    with torch.no_grad():
        eps = [torch.randn(4, *shape, dtype=torch.float64) for shape in model.latent_shapes]
        for e, e2 in zip(eps, model.encode(model.decode(eps)), strict=True):
            torch.testing.assert_close(e2, e, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["glow", "realnvp"])
def test_density_integrates_to_one_over_the_logit_support(kind):
    """exp(log p(v)) of a 1x2x2 model, midpoint rule on a 20^4 grid over the support
    of the logit preprocessing, (-a/(1-2a), (1-a)/(1-2a))^4. The density is smooth on
    the scale of the grid (the model starts from data of spread 0.15), so the rule is
    accurate to ~2e-3 here (measured against 32^4 points over three seeds); a missing
    log(1 - 2a) alone would give 0.9^4 = 0.66. (Larger drawn weights put spikes of width
    1e-4 at the box's edges, which no grid of this size resolves.)"""
    alpha, n = 0.05, 20
    start = (0.5 + 0.15 * torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(2),
                                      dtype=torch.float64)).clamp(0.01, 0.99)
    model = random_model(dict(kind=kind, logit_alpha=alpha), shape=(1, 2, 2), levels=1,
                         hidden=4, seed=2, start_data=start)
    lo, hi = -alpha / (1 - 2 * alpha), (1 - alpha) / (1 - 2 * alpha)
    h = (hi - lo) / n
    grid = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    points = torch.cartesian_prod(grid, grid, grid, grid).reshape(-1, 1, 2, 2)
    with torch.no_grad():
        mass = sum(model.log_prob(chunk).exp().sum() for chunk in points.split(40_000)) * h**4
    assert abs(mass.item() - 1.0) < 5e-3


def test_actnorm_standardises_each_channel_on_the_first_batch():
    model = MultiscaleFlow((1, 8, 8), levels=2, steps_per_level=2, hidden_channels=8,
                           kind="glow").double()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64) ** 2  # far from zero mean, unit variance
    norms = [m for m in model.modules() if isinstance(m, ActNorm2d)]
    assert len(norms) == 4
    log_p = model.log_prob(x)
    assert len(uninitialized_actnorms(model)) == 4  # evaluating a density starts nothing
    model.initialize(x)
    assert not uninitialized_actnorms(model)
    outputs = []  # what each ActNorm passes on towards the latent, on the same batch
    originals = {norm: norm.inverse for norm in norms}

    def recording(norm):
        def inverse(z, context=None):
            out, log_det = originals[norm](z, context)
            outputs.append(out)
            return out, log_det
        return inverse

    for norm in norms:
        norm.inverse = recording(norm)
    with torch.no_grad():
        model.encode(x)
    assert len(outputs) == 4
    for out in outputs:
        per_channel = out.transpose(0, 1).flatten(1)
        torch.testing.assert_close(per_channel.mean(1), torch.zeros(out.shape[1],
                                                                    dtype=out.dtype),
                                   atol=1e-10, rtol=0)
        torch.testing.assert_close(per_channel.std(1, unbiased=False),
                                   torch.ones(out.shape[1], dtype=out.dtype))
    assert not torch.allclose(model.log_prob(x), log_p)


def _actnorm2d_rank(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from nfvae.flows import initialize_by_inverse

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(rank)  # different data on each rank
        x = torch.randn(2 + rank, 3, 4, 4) * (rank + 1) + rank
        norm = ActNorm2d(3)
        with initialize_by_inverse(norm):
            norm.inverse(x)
        torch.save({"x": x, "log_scale": norm.log_scale.detach(),
                    "shift": norm.shift.detach()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_actnorm2d_initialises_from_all_ranks_batches_under_ddp(tmp_path):
    """The per-channel statistics are those of every rank's pixels together."""
    world = 2
    torch.multiprocessing.spawn(_actnorm2d_rank, args=(world, str(tmp_path / "init"),
                                                       str(tmp_path / "out")), nprocs=world)
    saved = [torch.load(tmp_path / f"out.{r}") for r in range(world)]
    pixels = torch.cat([s["x"].transpose(0, 1).flatten(1) for s in saved], dim=1)  # (C, N)
    for s in saved:
        torch.testing.assert_close(s["log_scale"], pixels.std(1, unbiased=False).log())
        torch.testing.assert_close(s["shift"], pixels.mean(1))
    assert not torch.allclose(saved[0]["x"].mean((0, 2, 3)), pixels.mean(1))


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    y = squeeze(x)
    assert y.shape == (1, 8, 2, 3)
    for c in range(2):
        for a in range(2):
            for b in range(2):
                assert torch.equal(y[0, 4 * c + 2 * a + b], x[0, c, a::2, b::2])
    assert torch.equal(unsqueeze(y), x)
    with pytest.raises(ValueError, match="even height and width"):
        squeeze(torch.zeros(1, 1, 7, 8))


def test_uniform_density_is_log2_levels_bits_per_dim():
    """p(v) = 1 on [0, 1)^D is the uniform distribution over the K^D discrete images."""
    zeros = torch.zeros(3)
    torch.testing.assert_close(bits_per_dim(zeros, 784, 256), torch.full((3,), 8.0))
    torch.testing.assert_close(bits_per_dim(zeros, 64, 17), torch.full((3,), math.log2(17)))
    # A density of 2^D on a half-width box is one bit per dimension better.
    torch.testing.assert_close(bits_per_dim(torch.full((1,), 64 * math.log(2)), 64, 256),
                               torch.full((1,), 7.0))


def test_dequantize_fills_each_pixels_cell_and_rejects_unscaled_images():
    x = torch.randint(0, 17, (50, 1, 8, 8))
    v = dequantize(x, num_levels=17, generator=torch.Generator().manual_seed(0))
    assert ((v >= x / 17) & (v < (x + 1) / 17)).all()
    assert (v - x / 17).std() > 0.01  # noise, not a constant offset
    with pytest.raises(ValueError, match=r"integers in \[0, 16\]"):
        dequantize(x / 16.0, num_levels=17)  # images already scaled to [0, 1]
    with pytest.raises(ValueError, match=r"integers in \[0, 15\]"):
        dequantize(x, num_levels=16)


def test_sample_and_log_prob_shapes_and_temperature():
    model = random_model(dict(kind="glow"), shape=(1, 8, 8), scale=0.1, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    cold = model.sample(5, temperature=0.0, generator=generator)
    assert cold.shape == (5, 1, 8, 8)
    torch.testing.assert_close(cold, cold[:1].expand(5, -1, -1, -1))  # T = 0: the mode
    warm = model.sample(5, temperature=1.0, generator=generator)
    assert warm.std(0).mean() > 0.01
    assert model.log_prob(warm).shape == (5,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(1, 28, 28), levels=3), "divisible by 8, got 28x28"),
    (dict(image_shape=(1, 8, 8), kind="realnvp", permutation="reverse"), "no permutation"),
    (dict(image_shape=(1, 8, 8), permutation="random"), "permutation must be one of"),
    (dict(image_shape=(1, 8, 8), coupling="spline"), "coupling must be one of"),
    (dict(image_shape=(1, 8, 8), kind="nice"), "kind must be one of"),
    (dict(image_shape=(1, 8, 8), logit_alpha=0.5), "alpha must be in"),
    (dict(image_shape=(1, 8, 8), prior_max_log_scale=0.0), "prior_max_log_scale must be > 0"),
])
def test_bad_options_fail_early_naming_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiscaleFlow(**kwargs)


def test_wrong_image_shape_is_named():
    model = MultiscaleFlow((1, 8, 8), levels=2, steps_per_level=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 8, 8\)"):
        model.log_prob(torch.rand(2, 1, 4, 4))


def test_per_level_log_dets_sum_to_the_total():
    model = random_model(dict(kind="realnvp", logit_alpha=0.05), shape=(1, 8, 8), levels=3)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    latents, parts = model.encode_parts(x)
    assert len(parts) == 1 + 3 + 1  # preprocessing, three levels, top prior
    _, total = model.encode_with_log_det(x)
    torch.testing.assert_close(torch.stack(parts).sum(0), total)
    assert all(p.shape == (3,) for p in parts)


def test_bounded_priors_are_the_gaussians_of_the_clamped_scale():
    """Against torch.distributions: the split prior's log p(z | h) is N(mu(h),
    exp(c tanh(raw / c))) and the top prior's N(mu, exp(c tanh(log_sigma / c)))."""
    torch.manual_seed(0)
    c = 1.5
    split = SplitPrior(4, max_log_scale=c).double()
    top = TopPrior((2, 3, 3), max_log_scale=c).double()
    with torch.no_grad():
        for p in [*split.parameters(), *top.parameters()]:
            p.normal_(0.0, 2.0)  # raw log-scales well past c
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    z = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0)

    h, eps, log_det = split.split(x)
    mean, raw = split.conv(h).chunk(2, dim=1)
    assert raw.abs().max() > 2 * c
    expected = torch.distributions.Normal(mean, torch.exp(c * torch.tanh(raw / c))).log_prob(
        x[:, 2:]).flatten(1).sum(1)
    torch.testing.assert_close(normal.log_prob(eps).flatten(1).sum(1) + log_det, expected)

    eps, log_det = top.standardize(z)
    expected = torch.distributions.Normal(
        top.mean, torch.exp(c * torch.tanh(top.log_scale / c))).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(normal.log_prob(eps).flatten(1).sum(1) + log_det, expected)


def test_the_prior_bound_keeps_an_outlier_latent_finite():
    """What a Glow trained on MNIST did to inverted digits and noise: the split prior's
    raw log-scale reached -8e6, eps = (z - mu) exp(-log_sigma) overflowed float32 and
    log p was -inf (a NaN loss when a training image did it). Bounded, it is finite."""
    outlier = torch.full((2, 4, 2, 2), 3.0)
    logs = {}
    for bound in (None, 10.0):
        prior = SplitPrior(4, max_log_scale=bound)
        with torch.no_grad():
            prior.conv.bias[2:] = -8e6  # the log-scale half of the output
        _, eps, log_det = prior.split(outlier)
        logs[bound] = (-0.5 * eps.pow(2)).flatten(1).sum(1) + log_det
    assert not torch.isfinite(logs[None]).any()
    assert torch.isfinite(logs[10.0]).all()
