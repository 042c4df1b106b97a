"""Conv and gated-conv nets: shapes from the data module, the gate, and training with every flow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from nfvae.data import DigitsDataModule
from nfvae.nets import (
    ConvDecoder,
    ConvEncoder,
    GatedConv2d,
    GatedConvDecoder,
    GatedConvEncoder,
    GatedConvTranspose2d,
)
from nfvae.objectives import negative_elbo
from nfvae.training import train

FLOW_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "flow")
                      .glob("*.yaml"))
SHAPES = [(1, 28, 28), (1, 28, 20), (1, 8, 8), (3, 13, 7)]
NETS = [(GatedConvEncoder, GatedConvDecoder), (ConvEncoder, ConvDecoder)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("nets", NETS, ids=["gated_conv", "conv"])
def test_encoder_and_decoder_follow_the_data_shape(nets, shape):
    encoder_cls, decoder_cls = nets
    encoder = encoder_cls(data_shape=shape)
    decoder = decoder_cls(latent_dim=6, data_shape=shape, num_params=2)
    x = torch.rand(3, *shape)
    context = encoder(x)
    assert context.shape == (3, encoder.out_dim)
    params = decoder(torch.randn(5, 6))
    assert params.shape == (5, 2, *shape)
    # every weight gets a gradient: no layer is cut off by a shape mismatch
    (context.sum() + params.sum()).backward()
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_gated_encoder_matches_the_paper_for_28x28():
    encoder = GatedConvEncoder(data_shape=(1, 28, 28))
    assert encoder.out_dim == 256
    last = encoder.net[-1].h
    assert last.kernel_size == (7, 7) and last.out_channels == 256
    assert GatedConvEncoder(data_shape=(1, 28, 20)).net[-1].h.kernel_size == (7, 5)


def test_gated_layers_are_linear_times_sigmoid_gate():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    layer = GatedConv2d(3, 4, 3, 1, 1)
    expected = layer.h(x) * torch.sigmoid(layer.g(x))
    torch.testing.assert_close(layer(x), expected)
    # a gate driven to -inf closes the layer
    with torch.no_grad():
        layer.g.bias.fill_(-1e4)
    assert layer(x).abs().max() == 0
    up = GatedConvTranspose2d(3, 2, 5, 2, 2, 1)
    assert up(x).shape == (2, 2, 18, 18)


@pytest.mark.parametrize("nets", NETS, ids=["gated_conv", "conv"])
def test_flat_data_shape_is_refused_with_a_clear_error(nets):
    with pytest.raises(ValueError, match=r"needs image data of shape \(C, H, W\)"):
        nets[0](data_shape=(784,))
    with pytest.raises(ValueError, match=r"needs image data of shape \(C, H, W\)"):
        nets[1](latent_dim=4, data_shape=(784,))


GATED_SMALL = ["model=gated_conv", "model.latent_dim=8", "model.encoder.channels=[8,16]",
               "model.decoder.channels=[8,16]", "model.encoder.out_dim=32", "data=digits"]


@pytest.mark.parametrize("flow", FLOW_CONFIGS)
def test_gated_conv_model_takes_optimizer_steps_with_each_flow(flow, compose_cfg):
    """Every conf/flow/ option on the gated-conv context: built from the real config,
    three Adam steps on 8x8 digits, finite losses, every parameter moved."""
    cfg = compose_cfg([*GATED_SMALL, f"flow={flow}"])
    torch.manual_seed(0)
    module = instantiate(cfg.module, data_shape=[1, 8, 8])
    model = module.model
    x = torch.bernoulli(DigitsDataModule(batch_size=32).split("train")[0][:32])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = negative_elbo(model(x), beta=0.5).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    frozen = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not frozen, f"parameters that never moved: {frozen}"


def test_gated_conv_model_trains_through_the_trainer(compose_cfg):
    cfg = compose_cfg([
        *GATED_SMALL, "flow=planar", "data.batch_size=32", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "callbacks=none", "~logger",
        "trainer.enable_checkpointing=false", "test.enabled=false",
    ])
    metrics = train(cfg)
    # Three steps are fewer than the shipped logging interval, so no train/* is written
    # (tests/test_training.py checks the training curves at that interval).
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))
