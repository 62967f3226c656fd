"""Patch embedding with fixed 2-D sine-cosine position embeddings."""

import keras
import numpy as np
from keras import ops
from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

from keras_sparse_moe.utils.validation import check_float
from keras_sparse_moe.utils.validation import check_int


def sincos2d_position_table(height, width, dim, temperature=10_000.0):
    """The 2-D sine-cosine position embeddings of a `height x width` patch
    grid, a float32 NumPy array `(height * width, dim)`.

    Patches are numbered row-major. With `q = dim // 4` frequencies
    `omega_i = temperature ** (-i / (q - 1))` (i = 0..q-1), the row of the
    patch in grid row `y` and column `x` is
    `[sin(x * omega), cos(x * omega), sin(y * omega), cos(y * omega)]`
    (MoCo v3's embedding, https://arxiv.org/abs/2104.02057, as vmoe's
    `position_emb={"name": "sincos2d"}` and big_vision compute it). The
    frequencies and the products `x * omega` are rounded to float32 as in
    vmoe's float32 computation; sine and cosine are then taken exactly and
    rounded once.

    Args:
        height, width: int >= 1, the patch grid.
        dim: int, a multiple of 4 and >= 8 (the token width).
        temperature: float > 0.

    Example:
    >>> table = sincos2d_position_table(2, 3, 8)
    >>> table.shape, table[0].tolist()  # patch (0, 0): sin 0 = 0, cos 0 = 1
    ((6, 8), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    """
    height = check_int("height", height, minimum=1)
    width = check_int("width", width, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    temperature = check_float("temperature", temperature, minimum=0.0, strict=True)
    if dim % 4 or dim < 8:
        raise ValueError(
            "2-D sin-cos position embeddings need a token width that is a multiple of 4 "
            f"and at least 8; received dim={dim}."
        )
    quarter = dim // 4
    f32 = np.float32
    exponent = np.arange(quarter, dtype=f32) / f32(quarter - 1)
    omega = f32(1.0) / np.power(f32(temperature), exponent, dtype=f32)
    y, x = np.mgrid[:height, :width].astype(f32)
    x = (x.reshape(-1, 1) * omega[None, :]).astype(np.float64)
    y = (y.reshape(-1, 1) * omega[None, :]).astype(np.float64)
    table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=-1)
    return table.astype(f32)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class SinCos2DPatchingAndEmbedding(ViTPatchingAndEmbedding):
    """keras-hub's `ViTPatchingAndEmbedding` with fixed 2-D sin-cos position
    embeddings (`sincos2d_position_table`) instead of learned ones.

    The patches (strided `Conv2D`, `patch_embedding`) get the table of their
    grid added; the class token (with `use_class_token=True`) gets no
    position embedding, as in vmoe. The table is a constant computed from
    the shapes (no weight, nothing to train or to convert).

    Args:
        image_size, patch_size, hidden_dim, num_channels, use_class_token:
            as `ViTPatchingAndEmbedding`.
        temperature: float > 0, the frequency base (10000).

    Example:
    >>> import numpy as np
    >>> layer = SinCos2DPatchingAndEmbedding(
    ...     image_size=(8, 8), patch_size=(4, 4), hidden_dim=8, use_class_token=False)
    >>> tuple(layer(np.zeros((1, 8, 8, 3), "float32")).shape)
    (1, 4, 8)
    >>> [w.path.split("/", 1)[1] for w in layer.weights]  # no position weights
    ['patch_embedding/kernel', 'patch_embedding/bias']
    """

    def __init__(self, image_size, patch_size, hidden_dim, temperature=10_000.0, **kwargs):
        super().__init__(image_size, patch_size, hidden_dim, **kwargs)
        self.temperature = check_float("temperature", temperature, minimum=0.0, strict=True)
        grid = [s // p for s, p in zip(image_size, patch_size)]
        self.position_table = sincos2d_position_table(
            grid[0], grid[1], hidden_dim, self.temperature
        )

    def build(self, input_shape):
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_dim), initializer="random_normal",
                dtype=self.variable_dtype, name="class_token",
            )
        self.patch_embedding = keras.layers.Conv2D(
            filters=self.hidden_dim, kernel_size=self.patch_size, strides=self.patch_size,
            padding="valid", dtype=self.dtype_policy, data_format=self.data_format,
            use_bias=self.use_patch_bias, name="patch_embedding",
        )
        self.patch_embedding.build(input_shape)
        self.built = True

    def call(self, inputs):
        patches = self.patch_embedding(inputs)
        if self.data_format == "channels_first":
            patches = ops.transpose(patches, axes=(0, 2, 3, 1))
        patches = ops.reshape(patches, (-1, self.num_patches, self.hidden_dim))
        patches = patches + ops.cast(self.position_table[None], patches.dtype)
        if self.use_class_token:
            class_token = ops.tile(
                ops.cast(self.class_token, patches.dtype), (ops.shape(patches)[0], 1, 1)
            )
            patches = ops.concatenate([class_token, patches], axis=1)
        return patches

    def get_config(self):
        config = super().get_config()
        # Derived from the other arguments (keras-hub writes them; __init__
        # does not take them).
        config.pop("num_patches", None)
        config.pop("num_positions", None)
        config["temperature"] = self.temperature
        return config
