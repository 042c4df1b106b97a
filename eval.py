"""Evaluate a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``.

``task=`` picks what to compute (conf/task/); the default is the test NLL.
"""

import json

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    results = instantiate(cfg.task)(cfg)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
