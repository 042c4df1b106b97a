"""A plain convolutional encoder and decoder (ReLU, two stride-2 stages).

Encoder: conv 5x5 /2 C -> c1, conv 5x5 /2 c1 -> c2, then a linear layer to
``hidden_dim`` features. Decoder: linear z -> hidden -> c2 x H/4 x W/4 maps, then two
stride-2 transposed convolutions back to (num_params * C, H, W). Any image size
works (see nfvae.nets.shapes).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from nfvae.nets.shapes import check_image_shape, halved_sides, upsampling_paddings


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> context (B, hidden_dim)."""

    def __init__(self, data_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 hidden_dim: int = 256):
        super().__init__()
        c, height, width = check_image_shape(data_shape, "ConvEncoder")
        c1, c2 = (int(ch) for ch in channels)
        h4, w4 = halved_sides(height, 2)[-1], halved_sides(width, 2)[-1]
        self.net = nn.Sequential(
            nn.Conv2d(c, c1, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(c1, c2, 5, 2, 2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * h4 * w4, hidden_dim), nn.ReLU(),
        )
        self.out_dim = int(hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """z (N, D) -> likelihood parameters (N, num_params, C, H, W)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], num_params: int = 1,
                 channels: Sequence[int] = (32, 64), hidden_dim: int = 256):
        super().__init__()
        c, height, width = check_image_shape(data_shape, "ConvDecoder")
        c1, c2 = (int(ch) for ch in channels)
        hs, ws = halved_sides(height, 2), halved_sides(width, 2)
        self.data_shape = (c, height, width)
        self.num_params = num_params
        self.start = (c2, hs[2], ws[2])
        self.linear = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, c2 * hs[2] * ws[2]), nn.ReLU(),
        )
        pad1, pad0 = upsampling_paddings(hs, ws)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 5, 2, 2, pad1), nn.ReLU(),
            nn.ConvTranspose2d(c1, num_params * c, 5, 2, 2, pad0),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z).view(z.shape[0], *self.start)
        return self.deconv(h).view(z.shape[0], self.num_params, *self.data_shape)
