"""Evaluate a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``."""

import json

import hydra
from omegaconf import DictConfig

from nfvae.training import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    print(json.dumps(evaluate(cfg), indent=2))


if __name__ == "__main__":
    main()
