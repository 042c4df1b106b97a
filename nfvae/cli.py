"""What train.py, eval.py and visualize.py share around their work.

* Expected user errors (missing data, a missing or broken checkpoint or npz, an
  invalid option) end the command with one short paragraph on stderr and exit
  status 1, not a traceback; ``HYDRA_FULL_ERROR=1`` brings the traceback back.
* A command that fails before writing anything of its own removes the run folder
  Hydra made for it, so failed starts leave no folder that looks like a run.
* The run folder's ``<command>.log`` holds what the command printed: nfvae's and
  Lightning's messages, warnings, result tables and the error of a failed run.
* Lightning's advert and a deprecation warning it triggers inside torch are
  silenced; nothing else is.
* Figures are drawn with matplotlib's Agg backend (into files and TensorBoard);
  importing nfvae as a library leaves the backend alone.
* An error of the user's making derives from ``nfvae.errors.UserError``.

This module imports no torch, so that ``--help`` stays fast: the scripts import the
heavy modules inside the work function they pass to ``run_task``. (``--help`` itself:
``nfvae.help``.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What Hydra writes into a run folder before the command's own work starts.
HYDRA_FILES = (".hydra",)
#: Exit status of a command stopped by an expected user error.
USER_ERROR_STATUS = 1


# -- quiet start ---------------------------------------------------------------------

class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_lightning() -> None:
    """Silence what is not the user's concern, precisely:

    * Lightning's "Tip: ... litlogger" advert, logged at every Trainer start;
    * torch's FutureWarning about ``LeafSpec``, which Lightning's own pytree helper
      triggers (pytorch_lightning/utilities/_pytree.py) and a user cannot act on.
    """
    advert = _DropMessages("💡 Tip: For seamless cloud logging")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(advert)
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def route_logs_to_hydra() -> None:
    """Send Lightning's messages and Python warnings through the root logger, whose
    handlers Hydra configured (console and the run folder's log file).

    Lightning gives its logger a handler of its own and stops propagation when it is
    imported before logging is configured (an earlier import, a launcher plugin); its
    messages would then miss the log file."""
    logging.captureWarnings(True)
    if not logging.getLogger().handlers:
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not logger.propagate:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True


# -- the run folder's log ------------------------------------------------------------

def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_file(text: str, level: int = logging.INFO, exc_info=None) -> None:
    """Write ``text`` to the run's log file only: for what the console already shows
    another way (a printed result, the error paragraph, Hydra's traceback)."""
    record = log.makeRecord(log.name, level, __file__, 0, text, (), exc_info)
    for handler in _file_handlers():
        if record.levelno >= handler.level:
            handler.handle(record)


def echo(text: str) -> None:
    """Print ``text`` on stdout (for pipes) and keep it in the run's log file."""
    print(text)
    to_log_file(text)


# -- errors --------------------------------------------------------------------------

def user_message(error: BaseException) -> str | None:
    """The message of an expected user error, or None for anything else (a bug)."""
    # Imported here: by the time an error is raised the command has loaded these.
    from hydra.errors import InstantiationException
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    # nfvae's own expected errors derive from UserError, so a new module's errors need
    # no edit here.
    from nfvae.errors import UserError

    expected = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError,
                IsADirectoryError, PermissionError, MisconfigurationException)
    if isinstance(error, expected):
        return str(error)
    if isinstance(error, InstantiationException) and isinstance(
            error.__cause__, (ValueError, TypeError, MisconfigurationException)):
        # A constructor refused a configured value; Hydra's wrapper adds only noise.
        key = re.search(r"full_key: (\S+)", str(error))
        return str(error.__cause__) + (f" (in {key.group(1)})" if key else "")
    return None


def _paragraph(message: str, command: str) -> str:
    return (f"{command}: error: {message}\n"
            "(Set HYDRA_FULL_ERROR=1 for the traceback.)")


# -- run folders ---------------------------------------------------------------------

def _empty_event_file(path: Path) -> bool:
    """An event file holding no summary: a logger was made, nothing was logged."""
    if not path.name.startswith("events.out.tfevents."):
        return False
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    try:
        return not any(event.HasField("summary") for event in EventFileLoader(str(path)).Load())
    except Exception:  # noqa: BLE001 - unreadable: keep it, someone may want to look
        return False


def _holds_only_hydra_files(run_dir: Path, log_file: Path) -> bool:
    """Nothing but Hydra's files, this command's log, empty folders, and what a logger
    leaves before anything is logged (an empty event file, Lightning's hparams.yaml)."""
    for path in run_dir.rglob("*"):
        relative = path.relative_to(run_dir)
        if relative.parts[0] in HYDRA_FILES or path == log_file or path.is_dir():
            continue
        if path.name == "hparams.yaml" or _empty_event_file(path):
            continue
        return False
    return True


def remove_failed_start(run_dir: Path, log_file: Path) -> bool:
    """Remove a run folder that holds nothing but Hydra's files (and this command's
    log); also its date folder (outputs/<date>/) if that is left empty."""
    if not run_dir.is_dir() or not _holds_only_hydra_files(run_dir, log_file):
        return False
    for handler in _file_handlers():
        if Path(handler.baseFilename).resolve().is_relative_to(run_dir.resolve()):
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    # Hydra's default run folder is outputs/<date>/<time>: drop what is left empty.
    parent = run_dir.parent
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", parent.name):
        for folder in (parent, parent.parent):
            if folder.name in (parent.name, "outputs") and folder.is_dir() \
                    and not any(folder.iterdir()):
                folder.rmdir()
    return True


def use_file_backend() -> None:
    """matplotlib's Agg backend: a command draws figures only into PNG, GIF and
    TensorBoard files, never on a screen, and a training machine may have no display
    (nor a GUI toolkit that is safe outside the main thread)."""
    import matplotlib

    matplotlib.use("Agg")


def run_task(work: Callable[[], T], command: str) -> T:
    """Run ``work`` (the command's job) inside the Hydra job, with the behaviour in
    this module's docstring."""
    from hydra.core.hydra_config import HydraConfig

    quiet_lightning()
    use_file_backend()
    route_logs_to_hydra()
    runtime = HydraConfig.get().runtime
    run_dir = Path(runtime.output_dir)
    log_file = run_dir / f"{HydraConfig.get().job.name}.log"
    # A log that already holds text belongs to an earlier command in this folder (a
    # resume): the folder is then someone's run and is never removed.
    fresh = not log_file.is_file() or log_file.stat().st_size == 0
    try:
        return work()
    except Exception as error:
        message = user_message(error)
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        if message is None or full_error:
            to_log_file(f"{command} failed", logging.ERROR,
                        (type(error), error, error.__traceback__))
        else:
            to_log_file(_paragraph(message, command), logging.ERROR)
        if fresh:
            remove_failed_start(run_dir, log_file)
        if message is None or full_error:
            raise
        print(_paragraph(message, command), file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from None
