"""Train a flow-posterior VAE: ``python train.py flow=radial flow.num_layers=16``.

Resume an interrupted run: ``python train.py hydra.run.dir=<its run folder> ckpt_path=last``.
"""

import logging

import hydra
from omegaconf import DictConfig

from nfvae.cli import run_task
from nfvae.config import CONF_DIR
from nfvae.help import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    def work() -> float | None:
        # Imported here, not at the top, so that --help answers without loading torch.
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        from nfvae.training import train

        try:
            metrics = train(cfg)
        except SIGTERMException:
            # Preempted: Lightning stopped after the current step and OnExceptionCheckpoint
            # saved checkpoints/on_exception.ckpt. Exit as a process killed by SIGTERM does.
            log.warning("stopped by SIGTERM; resume with: python train.py hydra.run.dir=%s "
                        "ckpt_path=last (and the same overrides)", cfg.paths.output_dir)
            raise SystemExit(143) from None
        # Returned for sweepers that optimise an objective (2-D density runs log val/loss).
        return metrics.get("val/neg_elbo", metrics.get("val/loss"))

    return run_task(work, "train.py")


if __name__ == "__main__":
    main()
