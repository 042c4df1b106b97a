"""What every LightningModule of nfvae shares (``TrainingModule``)."""

from nfvae.modules.base import TrainingModule

__all__ = ["TrainingModule"]
