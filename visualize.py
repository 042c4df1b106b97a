"""Figures of a checkpoint as files: ``python visualize.py ckpt_path=... out=DIR``.

The command lives in ``nfvae.visualize`` (also ``python -m nfvae.visualize`` from any folder once nfvae
is installed); this file keeps ``python visualize.py`` working in a checkout.
"""

from nfvae.visualize import main

if __name__ == "__main__":
    main()
