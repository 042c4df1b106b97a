"""Event files of a resumed run: what the interrupted run logged past its checkpoint goes.

A run resumed from a checkpoint at global step N logs every step from N on again.
TensorBoard hides the interrupted run's copies (the logger's ``purge_step``), but
readers of the raw files (tbparse, ``EventFileLoader``, pandas exports) would see
both. So before the resumed run writes, its folder's event files are rewritten
without the summaries at steps >= N, and without the previous session's HParams
summaries (``_hparams_/*``, ``hp/*``): the resumed run writes its own at its end, and
TensorBoard's HParams tab keeps the first it reads. Each (tag, step) is then written
once, whatever the reader.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

log = logging.getLogger(__name__)

#: Tags of the HParams summaries written at the end of a session.
HPARAMS_PREFIXES = ("_hparams_/", "hp/")


def _keep(event: event_pb2.Event, purge_step: int) -> bool:
    if not event.HasField("summary"):
        return True  # file version, session logs
    if event.step >= purge_step:
        return False
    return not any(v.tag.startswith(HPARAMS_PREFIXES) for v in event.summary.value)


def drop_events_from(log_dir: str | os.PathLike, purge_step: int) -> int:
    """Rewrite each ``events.out.tfevents.*`` of ``log_dir`` without the summaries at
    steps >= ``purge_step`` and the HParams summaries; returns how many were dropped.

    A file is replaced only once its new version is complete on disk (written beside
    it, then renamed over it), so an interruption leaves the old file or the new one.
    """
    dropped = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        if not path.is_file():
            continue
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [r for r in records if _keep(event_pb2.Event.FromString(r), purge_step)]
        if len(kept) == len(records):
            continue
        # No "tfevents" in the name: TensorBoard would read a left-over partial file.
        partial = path.with_name(".nfvae-rewrite.partial")
        with open(partial, "wb") as file:
            writer = RecordWriter(file)
            for record in kept:
                writer.write(record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        dropped += len(records) - len(kept)
    if dropped:
        log.info("removed %d event(s) from step %d on, and the previous HParams summary, "
                 "from %s: the resumed run logs them again", dropped, purge_step, log_dir)
    return dropped
