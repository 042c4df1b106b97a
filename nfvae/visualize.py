"""Figures of a checkpoint as files: ``python visualize.py ckpt_path=... out=DIR``.

Writes the figures the TensorBoard callbacks log (as PNGs named after their
tags) and ``layers.gif``, an animation of the flow layer by layer: the density
q_k with a grid carried through the layers for 2-D density runs, the cloud of
latent points z_k for VAEs.
"""

import hydra
from omegaconf import DictConfig

from nfvae.cli import echo, run_task
from nfvae.config import CONF_DIR
from nfvae.help import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="visualize")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        # Imported here, not at the top, so that --help answers without loading torch.
        from nfvae.tasks.visualize import visualize
        from nfvae.validation import validate

        validate(cfg)
        for path in visualize(cfg):
            echo(str(path))

    run_task(work, "visualize.py")


if __name__ == "__main__":
    main()
