"""experiment=sylvester/<dataset>_<flow>: every file composes with the paper's protocol,
and the ones whose flow has landed run one step through the real Trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer

from nfvae.callbacks import WarmupEarlyStopping
from nfvae.training import train

CONF = Path(__file__).resolve().parents[1] / "conf"
DATASETS = ("binarized_mnist", "omniglot", "frey_faces")
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment" / "sylvester").glob("*.yaml")
                     if not p.stem.startswith("_"))


def dataset_and_flow(name: str) -> tuple[str, str]:
    dataset = next(d for d in DATASETS if name.startswith(d + "_"))
    return dataset, name[len(dataset) + 1:]


def require_flow(flow: str) -> None:
    if not (CONF / "flow" / f"{flow}.yaml").is_file():
        pytest.skip(f"flow '{flow}' has not landed yet (no conf/flow/{flow}.yaml)")


def test_there_is_a_file_for_every_dataset_and_paper_flow():
    flows = {"none", "planar", "iaf", "sylvester_orthogonal", "sylvester_householder",
             "sylvester_triangular"}
    assert set(EXPERIMENTS) == {f"{d}_{f}" for d in DATASETS for f in flows}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_the_protocol(name, compose_cfg):
    dataset, flow = dataset_and_flow(name)
    require_flow(flow)
    cfg = compose_cfg([f"experiment=sylvester/{name}"])
    assert cfg.data._target_.endswith({"binarized_mnist": "BinarizedMNISTDataModule",
                                       "omniglot": "OmniglotDataModule",
                                       "frey_faces": "FreyFacesDataModule"}[dataset])
    assert cfg.flow.name == flow and cfg.flow.num_layers == (0 if flow == "none" else 4)
    assert cfg.model.encoder._target_ == "nfvae.nets.GatedConvEncoder"
    assert cfg.model.encoder.out_dim == 256 and cfg.model.latent_dim == 64
    assert cfg.optimizer._target_ == "torch.optim.Adamax" and cfg.optimizer.lr == 5e-4
    assert cfg.data.batch_size == 100
    assert cfg.objective.warmup_epochs == 100 and cfg.objective.beta_start == 0.0
    stopping = cfg.callbacks.early_stopping
    assert stopping._target_ == "nfvae.callbacks.WarmupEarlyStopping"
    assert (stopping.patience, stopping.monitor, stopping.warmup_epochs) == (
        100, "val/neg_elbo", 100)
    assert cfg.trainer.max_epochs == 2000 and cfg.test.num_samples == 5000
    likelihood = cfg.model.likelihood._target_.rsplit(".", 1)[-1]
    assert likelihood == ("DiscretizedLogistic" if dataset == "frey_faces" else "Bernoulli")
    sizes = {"sylvester_orthogonal": ("num_ortho_vecs", 8),
             "sylvester_householder": ("num_householder", 8)}
    if flow in sizes:
        key, value = sizes[flow]
        assert cfg.flow.family[key] == value
    if flow == "iaf":
        assert list(cfg.flow.family.hidden_dims) == [320, 320]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_step(name, compose_cfg, data_dir):
    """fast_dev_run: one train and one validation batch, small ones to stay quick."""
    _, flow = dataset_and_flow(name)
    require_flow(flow)
    cfg = compose_cfg([
        f"experiment=sylvester/{name}", f"paths.data_dir={data_dir}",
        "trainer.fast_dev_run=true", "data.batch_size=8", "data.eval_batch_size=16",
        "callbacks.images.num_latent_points=16", "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
    ])
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/neg_elbo"])


class _ScriptedMetric(LightningModule):
    """Logs a fixed sequence of validation values: one per epoch."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/neg_elbo", float(self.values[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return [torch.ones(1, 1)]

    def val_dataloader(self):
        return [torch.ones(1, 1)]


def _stopped_epoch(callback, values) -> int:
    trainer = Trainer(max_epochs=len(values), callbacks=[callback], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(_ScriptedMetric(values))
    return trainer.current_epoch - 1  # index of the last epoch run


def test_patience_counts_only_after_warmup():
    # Best at epoch 0, never improves again.
    values = [10.0, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    plain = _stopped_epoch(WarmupEarlyStopping(monitor="val/neg_elbo", patience=2), values)
    warm = _stopped_epoch(
        WarmupEarlyStopping(monitor="val/neg_elbo", patience=2, warmup_epochs=4), values)
    assert plain == 2  # epochs 1 and 2 without improvement
    assert warm == 5   # epochs 0-3 are warm-up; epochs 4 and 5 count


def test_improvement_during_warmup_still_resets_the_best():
    # Improves until epoch 3 (inside warm-up), then stalls: stops after patience from then.
    values = [10.0, 9, 8, 7, 7.5, 7.5, 7.5, 7.5, 7.5]
    callback = WarmupEarlyStopping(monitor="val/neg_elbo", patience=3, warmup_epochs=2)
    assert _stopped_epoch(callback, values) == 6
    assert float(callback.best_score) == 7.0


def test_non_finite_metric_stops_even_during_warmup():
    values = [10.0, float("nan"), 9, 8, 7]
    callback = WarmupEarlyStopping(monitor="val/neg_elbo", patience=10, warmup_epochs=4)
    assert _stopped_epoch(callback, values) == 1
