"""2-D density experiments: a flow on its own, from N(0, I) to a target density.

``targets`` (the densities), ``data`` (their DataModules) and ``module`` (the
LightningModules) sit in different layers (docs/architecture.md), so this package
imports none of them: importing ``nfvae.toy.targets`` loads no LightningModule.
"""
