"""nfvae's SLURM launcher (``hydra/launcher=slurm``): hydra-submitit-launcher's, with a
failed job reported as failed.

Hydra's ``run_job`` catches the task's exception and returns it inside the job's
result; submitit then ends the SLURM job as successful (``COMPLETED`` in sacct, "Job
completed successfully" in its log) and only the submitting process raises the error.
On a real cluster that hides a broken sweep entry from ``sacct`` and from the job's own
log. Here the job logs the error as one paragraph and raises it, so submitit records a
failure, the job's stderr log ends with the traceback, and SLURM marks it ``FAILED``.

Hydra accepts launchers only from the ``hydra_plugins`` namespace package, hence the
place of this module.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)

# conf/hydra/launcher/slurm.yaml resolves ${nfvae.slurm_gpus_per_node:...}; train.py
# imports nfvae lazily (fast --help), and Hydra imports this module when it discovers
# its plugins, before it resolves the launcher's config.
import nfvae.config  # noqa: F401,E402

log = logging.getLogger(__name__)


def error_paragraph(error: BaseException) -> str:
    """The error's type and message on one line (Hydra's instantiate errors span several)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}"


class SlurmLauncher(SubmititSlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        result = super().__call__(*args, **kwargs)
        if result.status == JobStatus.FAILED:
            error = result._return_value
            log.error("job %s failed (overrides: %s): %s", result.hydra_cfg.hydra.job.num
                      if result.hydra_cfg else "?", " ".join(result.overrides or []),
                      error_paragraph(error))
            raise error
        return result
