"""Train a flow-posterior VAE: ``python train.py flow=radial flow.num_layers=16``."""

import hydra
from omegaconf import DictConfig

from nfvae.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Returned for sweepers that optimise an objective.
    return metrics.get("val/neg_elbo")


if __name__ == "__main__":
    main()
