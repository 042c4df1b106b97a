"""Image flows (Glow, RealNVP) as a trainable model kind: the LightningModule
(``nfvae.image_flow.module``), its data path from 8-bit images (``.data``), and the
callback that draws what it learned (``.callbacks``).

Nothing is imported here, so that the data path (a lower layer) loads without the
LightningModule (docs/architecture.md)."""
