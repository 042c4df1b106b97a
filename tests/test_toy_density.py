"""The 2-D density modules hold a FlowDistribution: their log-densities are its own,
and checkpoints written before (the flow's weights under ``flow.``) still load."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from nfvae.distributions import FlowDistribution, standard_normal
from nfvae.toy.module import MaximumLikelihoodModule

REALNVP = {"_target_": "nfvae.flows.stack", "_partial_": True, "name": "realnvp",
           "num_layers": 2, "amortized": False,
           "family": {"_target_": "nfvae.flows.AffineCouplingFlow", "_partial_": True,
                      "hidden_dims": [16]}}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
MOONS = {"_target_": "nfvae.toy.targets.TwoMoons"}


def moved_module(seed: int = 0) -> MaximumLikelihoodModule:
    torch.manual_seed(seed)
    module = MaximumLikelihoodModule(data_shape=[2], target=MOONS, flow=REALNVP, optimizer=ADAM)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module


def test_toy_log_densities_are_the_flow_distributions():
    module = moved_module()
    assert isinstance(module.density, FlowDistribution) and module.flow is module.density.flow
    reference = FlowDistribution(standard_normal(2), module.flow)
    x = 2 * torch.randn(50, 2)
    torch.testing.assert_close(module.log_prob(x), reference.log_prob(x))
    z0 = torch.randn(50, 2)
    for mine, theirs in zip(module.push(z0), reference.push(z0), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_toy_checkpoint_with_the_flow_under_its_old_keys_loads(tmp_path):
    module = moved_module()
    old = {k.replace("density.flow.", "flow.", 1): v for k, v in module.state_dict().items()}
    assert any(k.startswith("flow.") for k in old) and not any("density" in k for k in old)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old, "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    loaded = MaximumLikelihoodModule.load_from_checkpoint(path, weights_only=True)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
