"""TensorBoard after a sweep: the HParams tab reads as one table, the scalar pages do
not open on bookkeeping, the projector opens on the newest embedding.

The sweep is the user's: ``train.py -m flow=none,planar`` with the shipped
callbacks and logger, shortened to two epochs of three batches."""

from __future__ import annotations

import re

import pytest
from tensorboard.plugins.hparams import plugin_data_pb2

from cli_support import run_script
from tests_support import read_events

SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=3"]
# TensorBoard's HParams tab ticks this many columns, taking those marked `differs`
# first (tensorboard/plugins/hparams/backend_context.py and its frontend).
TICKED = 5


def tab_default_columns(experiment) -> list[str]:
    ordered = sorted(experiment.hparam_infos, key=lambda h: (not h.differs, h.name))
    return [h.name for h in ordered[:TICKED]]


def hparams_of(run_dir):
    content = read_events(run_dir).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    return start, experiment


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_script("train.py", "-m", "flow=none,planar", *SHORT,
                        f"hydra.sweep.dir={cwd / 'multirun'}", cwd=cwd)
    assert result.returncode == 0, result.output
    return cwd / "multirun"


@pytest.mark.slow
def test_hparams_tab_names_trials_by_overrides_and_shows_what_tells_them_apart(sweep):
    for trial, flow in (("0", "none"), ("1", "planar")):
        start, experiment = hparams_of(sweep / trial)
        assert start.group_name == f"flow={flow}," + ",".join(SHORT)
        values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
        assert values["flow.name"] == flow and values["data.name"] == "digits"
        columns = tab_default_columns(experiment)
        assert {"flow.name", "flow.num_layers", "model.latent_dim", "data.name"} <= set(columns)
        plumbing = [k for k in start.hparams if re.search(r"_(target|partial|recursive)_", k)]
        assert not plumbing
        assert {h.name for h in experiment.hparam_infos} == set(start.hparams)


@pytest.mark.slow
def test_hparams_metrics_are_the_runs_own_curves_and_no_bookkeeping_card_comes_first(sweep):
    events = read_events(sweep / "0")
    scalars = set(events.Tags()["scalars"])
    _, experiment = hparams_of(sweep / "0")
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"val/neg_elbo", "zz_test/nll", "zz_test/neg_elbo"} <= metrics <= scalars
    # TensorBoard's scalar pages sort tag groups by name and expand the first two.
    groups = sorted({tag.split("/", 1)[0] for tag in scalars})
    assert not any(tag.startswith("hp/") for tag in scalars)
    assert "epoch" not in groups and "train/epoch" in scalars


@pytest.mark.slow
def test_projector_opens_on_the_newest_embedding(sweep):
    config = (sweep / "1" / "tensorboard" / "projector_config.pbtxt").read_text()
    steps = [int(s) for s in re.findall(r'tensor_name: "latent_mean:(\d+)"', config)]
    # Drawn after the first epoch and the last (callbacks.projector.every_n_epochs=20).
    assert len(steps) == 2 and steps[0] > steps[1], steps


def test_user_settings_come_first_and_key_settings_fill_the_ticked_columns(compose_cfg):
    from nfvae.hparams import flat_hparams, shown_hparams, trial_name

    overrides = ["optimizer.lr=3e-4", "seed=7", "ckpt_path=last", "hydra.run.dir=x"]
    cfg = compose_cfg(["optimizer.lr=3e-4", "seed=7"])
    hparams = flat_hparams(cfg)
    assert hparams["data.name"] == "DigitsDataModule"  # outside Hydra: the class
    assert hparams["flow.family"] == "PlanarFlow"
    assert shown_hparams(hparams, overrides) == [
        "optimizer.lr", "seed", "flow.name", "flow.num_layers", "model.latent_dim"]
    assert trial_name(overrides) == "optimizer.lr=3e-4,seed=7"
    assert shown_hparams(hparams, ["model/likelihood=gaussian", "flow=radial"])[:2] == [
        "model.likelihood", "flow.name"]
