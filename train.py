"""Train a flow-posterior VAE: ``python train.py flow=radial flow.num_layers=16``.

The command lives in ``nfvae.train`` (also ``python -m nfvae.train`` from any folder once nfvae
is installed); this file keeps ``python train.py`` working in a checkout.
"""

from nfvae.train import main

if __name__ == "__main__":
    main()
