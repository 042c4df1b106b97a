"""Image-shape arithmetic shared by the convolutional nets.

A 5x5 convolution with stride 2 and padding 2 maps a side of n pixels to ceil(n / 2);
the mirroring transposed convolution maps m back to 2m - 1 + output_padding, so
output_padding = n - (2 ceil(n / 2) - 1) (1 for even n, 0 for odd n) restores n
exactly. This is what lets one net serve 28x28, 28x20 or 8x8 images.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_image_shape(data_shape: Sequence[int], net: str) -> tuple[int, int, int]:
    """(C, H, W) as ints, or a clear error for flat or malformed shapes."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{net} needs image data of shape (C, H, W), got data_shape={shape}; "
            "use model=mlp for flat data, or set data.image_shape"
        )
    return shape  # type: ignore[return-value]


def halved_sides(side: int, times: int) -> list[int]:
    """[side, ceil(side/2), ceil(side/4), ...]: the sides after each stride-2 layer."""
    sides = [side]
    for _ in range(times):
        sides.append(-(-sides[-1] // 2))
    return sides


def output_padding(target: int, source: int) -> int:
    """output_padding that makes a stride-2, k=5, p=2 transposed conv map source -> target."""
    padding = target - (2 * source - 1)
    if padding not in (0, 1):
        raise ValueError(f"cannot upsample a side of {source} to {target} with stride 2")
    return padding


def upsampling_paddings(heights: Sequence[int], widths: Sequence[int]) -> list[tuple[int, int]]:
    """(H, W) output_padding of each stride-2 transposed conv that undoes ``halved_sides``,
    deepest stage first: for sides [n0, n1, n2], [(pad n2 -> n1), (pad n1 -> n0)]."""
    return [(output_padding(heights[i - 1], heights[i]), output_padding(widths[i - 1], widths[i]))
            for i in range(len(heights) - 1, 0, -1)]
