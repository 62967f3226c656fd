"""Geometry of `MoEViTBackbone`'s optional convolutional stem: its
validation and the image and patch sizes the patch embedding sees after it."""

import numbers


def check_stem_channels(stem_channels, patch):
    """Validated stem widths as a tuple (empty: no convolutional stem); each
    stride-2 stem convolution halves the image, so the `patch` pair must be
    divisible by `2**len(stem_channels)`.

    Example:
    >>> check_stem_channels([32, 64], (4, 4))
    (32, 64)
    """
    if stem_channels is None:
        return ()
    if (
        not isinstance(stem_channels, (list, tuple))
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                   for v in stem_channels)
    ):
        raise ValueError(
            "Argument `stem_channels` must be None or a list of positive ints (the "
            f"output channels of each stride-2 3x3 stem convolution); received "
            f"stem_channels={stem_channels!r}."
        )
    factor = 2 ** len(stem_channels)
    if patch[0] % factor or patch[1] % factor:
        raise ValueError(
            f"Each stem convolution halves the image, so the patch size must be "
            f"divisible by 2**len(stem_channels) = {factor}; received "
            f"stem_channels={list(stem_channels)!r} with patch size "
            f"{patch[0]}x{patch[1]}. Use at most "
            f"{min(_twos(patch[0]), _twos(patch[1]))} stem convolutions or a larger "
            "patch size."
        )
    return tuple(int(v) for v in stem_channels)


def _twos(value):
    """The exponent of the largest power of two dividing `value`."""
    count = 0
    while value % 2 == 0:
        value //= 2
        count += 1
    return count


def stem_geometry(image_shape, patch, stem_channels):
    """`(image_shape, patch)` seen by the patch embedding after the stem:
    each of the `len(stem_channels)` stride-2 convolutions halves the image
    (and so the remaining patch), and the last one sets the channels.
    Arguments as validated by `MoEViTBackbone` (`image_shape` a 3-tuple,
    `patch` a pair divisible by `2**len(stem_channels)`).

    Example:
    >>> stem_geometry((16, 16, 1), (4, 4), (32, 64))
    ((4, 4, 64), (1, 1))
    >>> stem_geometry((16, 16, 1), (4, 4), ())
    ((16, 16, 1), (4, 4))
    """
    if not stem_channels:
        return tuple(image_shape), tuple(patch)
    factor = 2 ** len(stem_channels)
    return (
        (image_shape[0] // factor, image_shape[1] // factor, stem_channels[-1]),
        (patch[0] // factor, patch[1] // factor),
    )
