"""Learning-rate schedules a config names: the warm-up's rates, its resume, and the
shipped conf/scheduler/warmup.yaml driving a real Trainer."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback

from nfvae.schedules import LinearWarmup
from nfvae.training import train


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_rises_linearly_then_holds():
    optimizer = _optimizer(0.5)
    schedule = LinearWarmup(optimizer, steps=4)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="scheduler.steps must be >= 1, got 0"):
        LinearWarmup(_optimizer(), steps=0)


def test_warmup_resumes_where_it_was():
    optimizer = _optimizer(1.0)
    schedule = LinearWarmup(optimizer, steps=10)
    for _ in range(3):
        optimizer.step()
        schedule.step()
    state = schedule.state_dict()
    # Lightning's order: build both from the config, then restore both.
    fresh_optimizer = _optimizer(1.0)
    resumed = LinearWarmup(fresh_optimizer, steps=10)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.4)
    fresh_optimizer.step()
    resumed.step()
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


class RateAtEnd(Callback):
    """Records the optimizer's rate when training ends (named in the config below)."""

    seen: dict[str, float] = {}

    def on_train_end(self, trainer, module):
        RateAtEnd.seen["lr"] = trainer.optimizers[0].param_groups[0]["lr"]


def test_shipped_warmup_config_steps_every_batch(compose_cfg):
    """scheduler=warmup as shipped (interval: step) on the Glow digits run: after 5
    batches the rate is 6/steps of the optimizer's."""
    cfg = compose_cfg(["experiment=glow/digits", "scheduler=warmup", "trainer.max_steps=5",
                       "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                       "~callbacks.progress_bar", "trainer.enable_model_summary=false",
                       "+callbacks.rate._target_=test_schedules.RateAtEnd"])
    assert cfg.scheduler.interval == "step" and cfg.scheduler.steps == 500
    RateAtEnd.seen.clear()
    train(cfg)
    assert RateAtEnd.seen["lr"] == pytest.approx(cfg.optimizer.lr * 6 / 500)
