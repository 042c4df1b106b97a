"""The VAE's prior (conf/prior/): the standard normal default, and a flow prior
p(zK) = N(0, I) pushed through an invertible flow with global parameters."""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from nfvae.distributions import FlowDistribution, StandardNormal, standard_normal_log_prob
from nfvae.evaluation import example_nll
from nfvae.flows import ActNorm, LULinear
from nfvae.module import FlowVAEModule
from nfvae.loading import load_module as load_checkpoint
from nfvae.tasks.common import build_datamodule
from nfvae.training import build_module, train
from tests_support import read_events

F64 = torch.float64
DIGITS = (1, 8, 8)
#: Every family with a closed-form inverse; those that start as N(0, I) itself.
INVERTIBLE = ["realnvp", "glow", "spline", "iaf", "householder"]
IDENTITY_START = ["realnvp", "glow", "spline", "householder"]
#: Rotations leave N(0, I) as it is at any parameters: a Householder-only prior is N(0, I).
ROTATIONS = {"householder"}
SMALL = ["prior.flow.num_layers=2"]


def flow_prior_cfg(compose_cfg, family: str | None = None, *overrides):
    chosen = [f"flow@prior.flow={family}"] if family else []
    return compose_cfg(["prior=flow", *chosen, *overrides])


def binary_digits(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *DIGITS), 0.3, dtype=F64), generator=generator)


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Parameters away from the identity start, mild enough that Glow's scales compound
    to a well-conditioned map."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale / math.sqrt(p.shape[-1]) if p.dim() > 1 else scale)
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.log_scale.normal_(0.0, 0.2)
            if isinstance(m, LULinear):
                m.log_s.normal_(0.0, 0.2)


def test_default_prior_is_the_standard_normal_and_adds_nothing_to_checkpoints(compose_cfg):
    cfg = compose_cfg([])
    assert cfg.prior.name == "standard_normal"
    model = build_module(cfg, DIGITS).model
    assert isinstance(model.prior, StandardNormal)
    assert not [k for k in model.state_dict() if k.startswith("prior")]
    terms = model(binary_digits(5).float(), num_samples=3)
    torch.testing.assert_close(terms.log_pz, standard_normal_log_prob(terms.zK))


@pytest.mark.parametrize("family", IDENTITY_START)
def test_flow_prior_at_its_start_gives_the_standard_normal_elbo_and_nll(compose_cfg, family):
    """float64, to 1e-6: the same ELBO (fixed noise) and importance-sampled NLL (the
    evaluation's fixed noise per example) as the same VAE with N(0, I)."""
    cfg = flow_prior_cfg(compose_cfg, None if family == "realnvp" else family)
    assert cfg.prior.flow.name == family  # realnvp: the shipped default of prior=flow
    torch.manual_seed(0)
    model = build_module(cfg, DIGITS).model.double()
    assert isinstance(model.prior, FlowDistribution) and len(model.prior.flow) == 4
    reference = copy.deepcopy(model)
    reference.prior = StandardNormal(model.latent_dim).double()
    x, index = binary_digits(6), torch.arange(6)
    eps = torch.randn(4, 6, model.latent_dim, dtype=F64)

    def elbo(m):
        return m(x, eps=eps).log_weight.mean(0)

    torch.testing.assert_close(elbo(model), elbo(reference), atol=1e-6, rtol=0)
    torch.testing.assert_close(example_nll(model, x, index, 50, seed=3),
                               example_nll(reference, x, index, 50, seed=3), atol=1e-6, rtol=0)
    if family in ROTATIONS:
        return
    # The prior does enter both: moved away from its start, the figures move.
    randomize(model.prior)
    assert (elbo(model) - elbo(reference)).abs().max() > 1e-3
    assert (example_nll(model, x, index, 50, seed=3)
            - example_nll(reference, x, index, 50, seed=3)).abs().max() > 1e-3


@pytest.mark.parametrize("family", INVERTIBLE)
def test_flow_prior_log_prob_is_the_brute_force_change_of_variables(compose_cfg, family):
    """log p(z) = log N(u) - log|det df/du| at u = f^{-1}(z), with the Jacobian of the
    forward map from autograd, at random parameters, in float64."""
    cfg = flow_prior_cfg(compose_cfg, family, *SMALL)
    dim = 3
    prior = instantiate(cfg.prior)(dim=dim).double()
    randomize(prior, seed=1)
    torch.manual_seed(2)
    z = 1.5 * torch.randn(16, dim, dtype=F64)
    u = prior.flow.inverse(z)[0].detach()
    torch.testing.assert_close(prior.flow(u)[0], z, atol=1e-9, rtol=0)  # u is f^{-1}(z)

    def forward(point):
        return prior.flow(point.unsqueeze(0))[0].squeeze(0)

    expected = torch.stack([
        standard_normal_log_prob(point) - torch.linalg.slogdet(
            torch.autograd.functional.jacobian(forward, point))[1]
        for point in u])
    torch.testing.assert_close(prior.log_prob(z), expected, atol=1e-8, rtol=1e-8)
    if family not in ROTATIONS:  # the parameters were away from the start: not N(0, I)
        assert (prior.log_prob(z) - standard_normal_log_prob(z)).abs().max() > 1e-3


def test_a_prior_flow_without_inverse_or_with_a_context_fails_early(compose_cfg):
    with pytest.raises(Exception, match=r"'planar' has none\. Families with one: glow, "
                                        r"householder, iaf, realnvp, spline"):
        build_module(flow_prior_cfg(compose_cfg, "planar"), DIGITS)
    with pytest.raises(Exception, match="prior.flow.amortized must be false"):
        build_module(flow_prior_cfg(compose_cfg, None, "prior.flow.amortized=true"), DIGITS)


def test_samples_come_through_the_prior(compose_cfg):
    torch.manual_seed(0)
    model = build_module(flow_prior_cfg(compose_cfg), DIGITS).model
    randomize(model.prior)
    u = torch.randn(5, model.latent_dim)
    zK = model.prior.push(u)[0]
    mean = model.likelihood.mean
    torch.testing.assert_close(model.sample(5, noise=u), mean(model.decoder(zK)))
    assert not torch.allclose(model.sample(5, noise=u), mean(model.decoder(u)))
    torch.manual_seed(1)
    drawn = model.sample(5)
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, model.sample(5, noise=torch.randn(5, model.latent_dim)))


def test_flow_prior_trains_in_the_vae_and_round_trips_through_its_checkpoint(compose_cfg,
                                                                              tmp_path):
    out = tmp_path / "run"
    cfg = flow_prior_cfg(compose_cfg, None, "trainer.max_epochs=1",
                         "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
                         "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
                         "~callbacks.progress_bar", "~callbacks.latent", "test.num_samples=10")
    # The module train() builds: same seed, same order of construction.
    pl.seed_everything(cfg.seed, workers=True)
    start = build_module(cfg, build_datamodule(cfg.data).data_shape)
    metrics = train(cfg)
    assert all(math.isfinite(metrics[k]) for k in ("val/neg_elbo", "test/nll"))

    path = out / "checkpoints" / "last.ckpt"
    trained = FlowVAEModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert trained.hparams.prior["name"] == "flow"
    saved = torch.load(path, weights_only=True)["state_dict"]
    prior_keys = [k for k in saved if k.startswith("model.prior.")]
    assert prior_keys and all(torch.equal(trained.state_dict()[k], saved[k]) for k in prior_keys)
    before, after = start.model.prior.state_dict(), trained.model.prior.state_dict()
    assert before.keys() == after.keys()
    # Lightning's loader and nfvae's give the same model.
    loaded = load_checkpoint(path)
    torch.manual_seed(0)
    z = torch.randn(32, trained.model.latent_dim)
    assert (start.model.prior.log_prob(z) - standard_normal_log_prob(z)).abs().max() < 1e-5
    torch.testing.assert_close(loaded.model.prior.log_prob(z), trained.model.prior.log_prob(z))
    # Four steps of training moved the prior away from N(0, I).
    assert [k for k in before if not torch.equal(before[k], after[k])]
    assert (trained.model.prior.log_prob(z) - standard_normal_log_prob(z)).abs().max() > 1e-4
    # The sample grid of each validation epoch was drawn (through the prior).
    assert "viz/images/samples" in read_events(out).Tags()["images"]


def test_sampling_a_glow_prior_leaves_it_as_it_was(compose_cfg):
    """ActNorm starts at the identity in a prior: a first forward pass (drawing samples
    for a figure) must not standardise it to that batch and change p(z) mid-training."""
    torch.manual_seed(0)
    model = build_module(flow_prior_cfg(compose_cfg, "glow"), DIGITS).model
    before = copy.deepcopy(model.prior.state_dict())
    model.sample(7)
    after = model.prior.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_runs_from_before_the_prior_group_resume_with_the_standard_normal(compose_cfg):
    """Their checkpoints have no ``prior`` hyperparameter: the default config fits them, a
    flow prior is named as the difference."""
    from nfvae.checkpoints import CheckpointError, check_compatible

    module = build_module(compose_cfg([]), DIGITS)
    hparams = {k: v for k, v in module.hparams.items() if k != "prior"}
    old = {"hyper_parameters": hparams, "state_dict": module.state_dict()}
    check_compatible(old, module, "old.ckpt")
    flow_module = build_module(flow_prior_cfg(compose_cfg), DIGITS)
    old["state_dict"] = flow_module.state_dict()
    with pytest.raises(CheckpointError, match="prior._target_ is 'nfvae.priors.standard_normal_"):
        check_compatible(old, flow_module, "old.ckpt")


def test_the_hparams_tab_names_the_prior(compose_cfg):
    from nfvae.hparams import flat_hparams

    assert flat_hparams(compose_cfg([]))["prior.name"] == "standard_normal"
    flat = flat_hparams(flow_prior_cfg(compose_cfg, "glow"))
    assert (flat["prior.name"], flat["prior.flow.name"], flat["prior.flow.num_layers"]) == (
        "flow", "glow", 4)
