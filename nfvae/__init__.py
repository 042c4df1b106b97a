"""nfvae: variational autoencoders with normalizing-flow posteriors."""

__version__ = "0.1.0"
