"""Synthetic handwritten digits in the format of the embedded digits, for pretraining.

The embedded digits (UCI optdigits) were made by NIST's preprocessing: each
handwritten digit was scanned, normalised in size and stroke width into a
32x32 bitmap, and the bitmap was cut into 4x4 blocks whose "on" pixels were
counted, giving 8x8 images of counts 0..16. `make_synthetic_digits` imitates
that chain on digits it draws itself:

1. a glyph: pen strokes of a digit template (`digit_strokes`, a thick round
   pen of random width), or, for a share `1 - stroke_share`, the digit in
   one of the fonts that ship with matplotlib (DejaVu, STIX, Computer
   Modern; regular, bold, italic);
2. a random rotation and shear, and a smooth elastic distortion;
3. the NIST-like normalisation: the ink's bounding box is stretched to the
   full 32-pixel height and a width of about 19 pixels (narrow glyphs, a
   plain 1, keep roughly their aspect), placed near the centre; the strokes
   are thickened or thinned to about 30% ink (a blur, then a threshold at the
   matching quantile);
4. 4x4 block counts: an 8x8 uint8 image with values 0..16.

The settings were matched to the statistics of the embedded training images
(every digit spans all 8 rows, mostly 6 columns, about 310 counts of ink).
A classifier trained on synthetic digits alone reads 84-86% of the real
training digits; pretraining on them before fine-tuning on the real ones
is what `docs/results.md` measures. `load_synthetic_digits` serves the
splits used to pretrain `moe_vit_tiny_synthetic_digits` with fixed seeds
(`pretrain_synthetic.py`).

Needs Pillow and matplotlib (dependencies of the package); no network. The
images are deterministic for a seed on one machine; FreeType versions may
render the fonts slightly differently elsewhere.
"""

import functools
import logging
import os

import numpy as np

from digit_strokes import digit_strokes

logger = logging.getLogger(__name__)

FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)
# Default split sizes of the synthetic digits, and the share of the
# train count drawn for validation and test (each split has its own seed).
SYNTHETIC_TRAIN_COUNT = 50_000
SYNTHETIC_VALIDATION_SHARE = 0.04
SYNTHETIC_TEST_SHARE = 0.02
SYNTHETIC_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
MIN_SYNTHETIC_COUNT = 100

_CANVAS = 128  # side of the drawing canvas, pixels
_BITMAP = 32  # side of the NIST-like bitmap
_ROTATION_DEGREES = 6.0
_SHEAR = 0.15
_ELASTIC = 0.03  # control-point standard deviation, fraction of the canvas
_ELASTIC_GRID = 4
_WIDTH, _WIDTH_STD, _NARROW_WIDTH = 19.0, 2.0, 18
_X_OFFSET, _X_JITTER = 0.5, 1.0
_INK, _INK_STD = 0.30, 0.03
_BLUR = 1.0


def font_directory():
    """The directory of the TrueType fonts bundled with matplotlib.

    Example:
    >>> import os
    >>> os.path.isfile(os.path.join(font_directory(), "DejaVuSans.ttf"))
    True
    """
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=4)
def _fonts(size=80):
    from PIL import ImageFont

    directory = font_directory()
    fonts = []
    for name in FONT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            fonts.append(ImageFont.truetype(path, size))
    if not fonts:
        logger.warning("No matplotlib fonts found in %s; synthetic digits use pen strokes only.", directory)
    return tuple(fonts)


def _draw_strokes(digit, rng):
    from PIL import Image
    from PIL import ImageDraw

    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    low, high = 0.1875 * _CANVAS, 0.8125 * _CANVAS
    width = int(rng.integers(6, 18))
    for stroke in digit_strokes(digit, rng):
        points = [(low + x * (high - low), low + y * (high - low)) for x, y in stroke]
        draw.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round pen ends
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return image


def _draw_font(digit, font, rng):
    from PIL import Image
    from PIL import ImageDraw

    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    stroke = int(rng.integers(0, 7))
    ImageDraw.Draw(image).text(
        (_CANVAS / 2, _CANVAS / 2), str(digit), fill=255, font=font, anchor="mm",
        stroke_width=stroke, stroke_fill=255,
    )
    return image


def smooth_field(rng, size, grid, std):
    """A smooth random displacement field, shape `(2, size, size)`: a `grid`
    x `grid` lattice of normal control displacements (standard deviation
    `std` pixels), interpolated bilinearly.

    Example:
    >>> import numpy as np
    >>> field = smooth_field(np.random.default_rng(0), 32, 4, 2.0)
    >>> field.shape, bool(np.abs(np.diff(field, axis=1)).max() < 2.0)
    ((2, 32, 32), True)
    """
    size = _check_count("size", size, 2)
    grid = _check_count("grid", grid, 2)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
        raise ValueError(f"`std` must be a number >= 0; received {std!r}.")
    control = rng.normal(0.0, std, size=(2, grid, grid))
    position = np.linspace(0, grid - 1, size)
    i0 = np.clip(np.floor(position).astype(int), 0, grid - 2)
    t = position - i0
    rows = control[:, i0, :] * (1 - t)[None, :, None] + control[:, i0 + 1, :] * t[None, :, None]
    return rows[:, :, i0] * (1 - t)[None, None, :] + rows[:, :, i0 + 1] * t[None, None, :]


def bilinear_sample(image, ys, xs):
    """`image` (H, W) read at float coordinates `ys`, `xs` with bilinear
    interpolation; outside the image reads 0.

    Example:
    >>> import numpy as np
    >>> image = np.arange(9.0).reshape(3, 3)
    >>> bilinear_sample(image, np.array([0.5, 2.0]), np.array([0.5, 3.0])).tolist()
    [2.0, 0.0]
    """
    image, ys, xs = np.asarray(image), np.asarray(ys), np.asarray(xs)
    if image.ndim != 2 or ys.shape != xs.shape:
        raise ValueError(
            "`image` must be 2-D and `ys`, `xs` of one shape; received shapes "
            f"{image.shape}, {ys.shape}, {xs.shape}."
        )
    h, w = image.shape
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    ty, tx = ys - y0, xs - x0

    def at(y, x):
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        return np.where(inside, image[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)], 0.0)

    return (at(y0, x0) * (1 - ty) * (1 - tx) + at(y0, x0 + 1) * (1 - ty) * tx
            + at(y0 + 1, x0) * ty * (1 - tx) + at(y0 + 1, x0 + 1) * ty * tx)


def _distort(image, rng):
    """Random rotation and shear about the centre, then a smooth elastic
    distortion (one backward map); floats in [0, 1]."""
    glyph = np.asarray(image, dtype=np.float32) / 255.0
    angle = np.deg2rad(rng.normal(0.0, _ROTATION_DEGREES))
    shear = rng.normal(0.0, _SHEAR)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotation @ np.array([[1.0, 0.0], [shear, 1.0]])
    yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32) - _CANVAS / 2
    field = smooth_field(rng, _CANVAS, _ELASTIC_GRID, _ELASTIC * _CANVAS)
    ys = matrix[0, 0] * yy + matrix[0, 1] * xx + _CANVAS / 2 + field[0]
    xs = matrix[1, 0] * yy + matrix[1, 1] * xx + _CANVAS / 2 + field[1]
    return bilinear_sample(glyph, ys, xs)


def to_optdigits(glyph, rng):
    """NIST-like normalisation of a grey glyph (floats in [0, 1], ink high)
    into a 32x32 bitmap, then 4x4 block counts.

    Returns:
        uint8 array (8, 8) with values 0..16, or None when the glyph has no ink.

    Example:
    >>> import numpy as np
    >>> glyph = np.zeros((64, 64)); glyph[8:56, 24:40] = 1.0
    >>> image = to_optdigits(glyph, np.random.default_rng(0))
    >>> image.shape, int(image.max()) <= 16, bool(image[0].any() and image[-1].any())
    ((8, 8), True, True)
    """
    from PIL import Image
    from PIL import ImageFilter

    glyph = np.asarray(glyph)
    if glyph.ndim != 2:
        raise ValueError(f"`glyph` must be a 2-D array (height, width); received shape {glyph.shape}.")
    ink = glyph > 0.5
    if not ink.any():
        return None
    rows = np.flatnonzero(ink.any(1))
    cols = np.flatnonzero(ink.any(0))
    crop = glyph[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    aspect = crop.shape[1] / crop.shape[0]
    if aspect * _BITMAP < _NARROW_WIDTH:  # a narrow glyph keeps about its aspect
        width = int(np.clip(round(aspect * _BITMAP * rng.uniform(1.0, 1.6)), 6, 28))
    else:
        width = int(np.clip(round(rng.normal(_WIDTH, _WIDTH_STD)), 14, 30))
    resized = Image.fromarray(np.uint8(np.clip(crop, 0, 1) * 255)).resize((width, _BITMAP), Image.BILINEAR)
    canvas = np.zeros((_BITMAP, _BITMAP), np.uint8)
    left = int(round((_BITMAP - width) / 2 + rng.normal(_X_OFFSET, _X_JITTER)))
    left = int(np.clip(left, 0, _BITMAP - width))
    canvas[:, left:left + width] = np.asarray(resized)
    blurred = np.asarray(Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(_BLUR)), dtype=np.float32)
    target = np.clip(rng.normal(_INK, _INK_STD), 0.15, 0.45)
    threshold = max(float(np.quantile(blurred, 1.0 - target)), 1.0)
    # A glyph with more solid ink than the target ties at the top value: keep it.
    bitmap = blurred >= threshold if threshold >= blurred.max() else blurred > threshold
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.uint8)


def _check_count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; received {value!r}.")
    return int(value)


def make_synthetic_digits(count, seed=0, stroke_share=0.7):
    """Synthetic handwritten digits in the embedded digits' format.

    Args:
        count: int >= 1, number of images; the ten classes take turns, so
            they are balanced (then shuffled).
        seed: int >= 0; the same seed gives the same images on one machine.
        stroke_share: float in [0, 1], the share of pen-stroke digits; the
            rest are font digits (all strokes when matplotlib's fonts are
            missing).

    Returns:
        `(images, labels)`: uint8 (count, 8, 8, 1) with values 0..16, and
        int32 (count,) with values 0..9.

    Example:
    >>> images, labels = make_synthetic_digits(20, seed=0)
    >>> images.shape, images.dtype.name, int(images.max()) <= 16, sorted(set(labels.tolist())) == list(range(10))
    ((20, 8, 8, 1), 'uint8', True, True)
    """
    count = _check_count("count", count)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; received {seed!r}.")
    if isinstance(stroke_share, bool) or not isinstance(stroke_share, (int, float)) or not 0 <= stroke_share <= 1:
        raise ValueError(f"`stroke_share` must be a number in [0, 1]; received {stroke_share!r}.")
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    images = np.zeros((count, 8, 8), np.uint8)
    labels = np.zeros(count, np.int32)
    made = 0
    report = max(count // 5, 10_000)
    while made < count:
        digit = made % 10
        if not fonts or rng.random() < stroke_share:
            glyph = _draw_strokes(digit, rng)
        else:
            glyph = _draw_font(digit, fonts[int(rng.integers(len(fonts)))], rng)
        image = to_optdigits(_distort(glyph, rng), rng)
        if image is None:  # distorted off the canvas: draw again
            continue
        images[made], labels[made] = image, digit
        made += 1
        if made % report == 0 and made < count:
            logger.info("  synthetic digits: %s / %s", f"{made:,}", f"{count:,}")
    order = rng.permutation(count)
    return images[order][..., None], labels[order]


def synthetic_digits_counts(train_count=SYNTHETIC_TRAIN_COUNT, validation=True):
    """Split sizes of the synthetic digits for `train_count`
    training images: validation 4% and test 2% of it (at least 10 each).

    Example:
    >>> synthetic_digits_counts(50_000)
    {'train': 50000, 'validation': 2000, 'test': 1000}
    """
    train_count = _check_count("train_count", train_count, MIN_SYNTHETIC_COUNT)
    counts = {"train": train_count}
    if validation:
        counts["validation"] = max(10, round(SYNTHETIC_VALIDATION_SHARE * train_count))
    counts["test"] = max(10, round(SYNTHETIC_TEST_SHARE * train_count))
    return counts


@functools.lru_cache(maxsize=6)
def load_synthetic_digits(split, train_count=SYNTHETIC_TRAIN_COUNT):
    """One split of the synthetic digits (cached in memory).

    Each split is `make_synthetic_digits` with its own fixed seed (train 0,
    validation 1, test 2), so the splits never share an image and a split's
    images do not depend on the others' sizes.

    Returns:
        `(images, labels)` as `make_synthetic_digits`, read-only.

    Example:
    >>> images, labels = load_synthetic_digits("test", train_count=500)
    >>> images.shape, labels.shape
    ((10, 8, 8, 1), (10,))
    """
    if split not in SYNTHETIC_SPLIT_SEEDS:
        raise ValueError(f"`split` must be one of {sorted(SYNTHETIC_SPLIT_SEEDS)}; received {split!r}.")
    count = synthetic_digits_counts(train_count)[split]
    if count >= 5_000:
        logger.info("Drawing %s synthetic digits for the %s split ...", f"{count:,}", split)
    images, labels = make_synthetic_digits(count, seed=SYNTHETIC_SPLIT_SEEDS[split])
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
