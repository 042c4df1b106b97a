"""Lightning's TensorBoard logger, and the tag groups that make the scalar pages open
on the training and validation curves.

TensorBoard's Time Series page sorts every card by tag (a natural sort: digits and
``/`` before letters, then character codes, so upper case before lower case), groups
the cards by the tag's first segment in that order and expands the first two groups;
the Scalars page lists its groups in the same order and opens the first two. So the
curves come first only if no other group sorts before ``val``:

* ``train/*`` and ``val/*``: the curves (the latent callback's activity series,
  measured on validation data, are ``val/latent/*``);
* ``viz/*``: every figure, image and histogram (``viz/images/samples``,
  ``viz/latent/trajectories``, ...);
* ``zz_<group>/*``: numbers logged once at the end, which would otherwise open the
  pages as single-dot cards: the test split's (``zz_test/nll``) and the end-of-fit
  diagnosis's (``zz_diagnose/*``); likewise ``zz_test_curve`` and ``zz_health``.
  Lightning's metric keys stay ``test/*`` (the printed table, ``trainer.test()``'s
  results); only their TensorBoard tags carry the ``zz_`` that sorts them after ``val``.

Lightning's epoch counter, a top-level ``epoch`` tag that would sort first, is
``train/epoch``. The HParams metrics are the run's own ``val/*`` and ``zz_test/*``
scalars (``nfvae.hparams``), not copies.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

EPOCH_TAG = "train/epoch"
#: The group of every figure, image and histogram.
FIGURE_GROUP = "viz"
#: Prefix of groups that must sort after ``val`` (TensorBoard compares character codes).
LATE = "zz_"
#: The groups that come first, in this order, on both scalar pages.
CURVE_GROUPS = ("train", "val")


def late(group: str) -> str:
    """``test`` -> ``zz_test``: a group name that sorts after ``val``."""
    return LATE + group


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a Lightning metric key (``test/nll`` -> ``zz_test/nll``,
    ``epoch`` -> ``train/epoch``); other keys are their own tags."""
    if key == "epoch":
        return EPOCH_TAG
    if key.startswith("test/"):
        return late(key)
    return key


def figure_tag(tag: str) -> str:
    """``images/samples`` -> ``viz/images/samples``."""
    return f"{FIGURE_GROUP}/{tag}"


def tag_group(tag: str) -> str:
    """The group TensorBoard puts a tag in: its first segment."""
    return tag.split("/", 1)[0]


class TensorBoardLogger(_LightningTensorBoardLogger):
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({tensorboard_tag(k): v for k, v in metrics.items()}, step)
