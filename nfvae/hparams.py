"""A run's settings and final metrics for TensorBoard's HParams tab.

The tab reads as one table of trials when

* the columns ticked by default are the settings that tell trials apart. The tab
  ticks the first ``SHOWN`` hparams, taking first those the experiment marks as
  ``differs``; so the settings the user chose on the command line (a sweep's
  varied settings among them) are marked first, then the flow family, the number
  of layers, the latent size, the dataset and the learning rate, up to ``SHOWN``;
* each trial is named by its command-line overrides (``flow=planar``) rather than
  its folder (``0/tensorboard``);
* Hydra's plumbing (``_target_``, ``_partial_``, ...) is left out; the dataset and
  model are named by their config group option (``data.name: digits``).

The metrics are the run's own ``val/*`` and test scalars (the tab shows each one's
last value, read from their TensorBoard tags, ``zz_test/*``: ``nfvae.tb_logger``),
so no extra ``hp/*`` copies crowd the scalar page.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from nfvae.config import to_plain
from nfvae.tb_logger import tensorboard_tag

#: TensorBoard's HParams tab ticks this many hparams by default.
SHOWN = 5
#: Always worth a column: what the model is (after the user's own choices).
KEY_SETTINGS = ("flow.name", "flow.num_layers", "model.latent_dim", "data.name", "optimizer.lr")
#: Hydra's instantiation keys; they say how a config is built, not what it is.
PLUMBING = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
#: Groups whose Hydra choice names the part (data=digits -> data.name: digits).
NAMED_GROUPS = ("data", "model", "optimizer")
#: Overrides that do not describe the trial: where it runs and what it resumes.
NOT_SETTINGS = ("ckpt_path", "paths.", "hydra.", "trainer.enable_progress_bar")


def hydra_context() -> tuple[dict[str, str], list[str]]:
    """(group choices, task overrides) of the running Hydra job; empty outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return {}, []
    choices = {str(k): str(v) for k, v in hydra_cfg.runtime.choices.items() if v is not None}
    return choices, [str(o) for o in hydra_cfg.overrides.task]


def flat_hparams(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Scalars of the config under dotted keys, without Hydra's plumbing keys, nested
    parts named by their class, and ``<group>.name`` for the chosen data, model and
    optimizer options."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            if "_target_" in node and "." in prefix:
                # A nested part is named by its class (data.target: U1); a group's
                # own class gets the group's option name below instead.
                flat[prefix] = str(node["_target_"]).rsplit(".", 1)[-1]
            for key, value in node.items():
                if key not in PLUMBING:
                    walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            flat[prefix] = str(node)
        elif node is None or isinstance(node, (bool, int, float, str)):
            flat[prefix] = "None" if node is None else node

    keys = ("data", "model", "flow", "prior", "optimizer", "objective", "seed")
    walk("", {k: to_plain(cfg[k]) for k in keys if k in cfg})
    # The module's own settings (a toy run's annealing, say); its nested configs
    # repeat the groups above.
    module = to_plain(cfg.get("module")) or {}
    walk("module", {k: v for k, v in module.items()
                    if not isinstance(v, (dict, list)) and k not in PLUMBING})
    for group in NAMED_GROUPS:
        name = (choices or {}).get(group) or _target_name(cfg, group)
        key = group.replace("/", ".") + ".name"
        if name and key not in flat:
            flat[key] = name
    return dict(sorted(flat.items()))


def _target_name(cfg: DictConfig, group: str) -> str | None:
    """Outside Hydra (tests, notebooks): the class a group's config builds."""
    node: Any = cfg
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, DictConfig) else None
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return str(target).rsplit(".", 1)[-1] if target else None


def user_settings(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """(key, value) of the command-line overrides that describe the trial."""
    found = []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and not key.startswith(NOT_SETTINGS):
            found.append((key.strip(), value.strip()))
    return found


def trial_name(overrides: Iterable[str]) -> str:
    """``flow=planar,optimizer.lr=0.0003``: the trial's settings as the user typed them."""
    return ",".join(f"{k}={v}" for k, v in user_settings(overrides))


def shown_hparams(hparams: Mapping[str, Any], overrides: Iterable[str]) -> list[str]:
    """The hparams to tick by default: the user's settings, then ``KEY_SETTINGS``."""
    shown: list[str] = []
    for key, _ in user_settings(overrides):
        # A group choice (flow=planar) is shown by its name (flow.name).
        dotted = key.replace("/", ".")
        for candidate in (key, dotted, f"{dotted}.name"):
            if candidate in hparams and candidate not in shown:
                shown.append(candidate)
                break
    shown += [k for k in KEY_SETTINGS if k in hparams and k not in shown]
    return shown[:SHOWN]


def hparams_summaries(hparams: Mapping[str, Any], metrics: Sequence[str],
                      shown: Sequence[str], group_name: str = "",
                      start_time: float | None = None) -> list[Any]:
    """The HParams plugin's experiment, session-start and session-end summaries."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    def summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
        return Summary(value=[Summary.Value(tag=tag,
                                            metadata=metadata.create_summary_metadata(data))])

    infos, start = [], plugin_data_pb2.SessionStartInfo(
        group_name=group_name, start_time_secs=start_time or time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):
            kind = api_pb2.DATA_TYPE_BOOL
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            kind = api_pb2.DATA_TYPE_FLOAT64
            start.hparams[name].number_value = value
        else:
            kind = api_pb2.DATA_TYPE_STRING
            start.hparams[name].string_value = str(value)
        infos.append(api_pb2.HParamInfo(name=name, type=kind, differs=name in shown))
    experiment = api_pb2.Experiment(
        time_created_secs=start.start_time_secs, hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS,
                                         end_time_secs=time.time())
    return [summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
                experiment=experiment)),
            summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(
                session_start_info=start)),
            summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(
                session_end_info=end))]


def log_hparams(logger: Any, cfg: DictConfig, metrics: Mapping[str, float]) -> None:
    """Write the run's settings and the names of its final metrics for the HParams tab.

    ``metrics``: the final values by tag; TensorBoard loggers get the tags (the tab
    reads their scalars), other loggers get the values as Lightning passes them."""
    from pytorch_lightning.loggers import TensorBoardLogger

    choices, overrides = hydra_context()
    hparams = flat_hparams(cfg, choices)
    if not isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(hparams, {f"hp/{k.replace('/', '_')}": v
                                         for k, v in metrics.items()})
        return
    logger.log_hyperparams(hparams)  # hparams.yaml; no summaries without metrics
    writer = logger.experiment._get_file_writer()
    tags = sorted(tensorboard_tag(k) for k in metrics)
    for summary in hparams_summaries(hparams, tags, shown_hparams(hparams, overrides),
                                     trial_name(overrides)):
        writer.add_summary(summary)
