"""Evaluate a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``.

``task=`` picks what to compute (conf/task/); the default is the test NLL.
"""

import json

import hydra
from omegaconf import DictConfig

from nfvae.cli import echo, run_task
from nfvae.config import CONF_DIR
from nfvae.help import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        # Imported here, not at the top, so that --help answers without loading torch.
        from hydra.utils import instantiate

        from nfvae.validation import validate

        validate(cfg)
        results = instantiate(cfg.task)(cfg)
        echo(json.dumps(results, indent=2))

    run_task(work, "eval.py")


if __name__ == "__main__":
    main()
