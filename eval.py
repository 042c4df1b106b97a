"""Evaluate a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``.

The command lives in ``nfvae.eval`` (also ``python -m nfvae.eval`` from any folder once nfvae
is installed); this file keeps ``python eval.py`` working in a checkout.
"""

from nfvae.eval import main

if __name__ == "__main__":
    main()
