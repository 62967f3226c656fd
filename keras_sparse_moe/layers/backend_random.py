"""Random draws for training-time router noise, fast on every backend.

`keras.random.normal` / `uniform` with a `SeedGenerator` call TensorFlow's
stateless RNG with its default `auto_select` algorithm. Under XLA
(`jit_compile=True`) on CPU that algorithm, fed a seed that is a runtime
tensor, compiles to a generator ~25x slower than Philox: ~47 ms for the
4160 x 64 gating noise of one layer, more than the router itself. On the
TensorFlow backend these helpers ask for Philox explicitly, which is also
what `auto_select` picks outside XLA on CPU, so the numbers drawn without
XLA are unchanged. Every other backend uses `keras.random` as is.
"""

import keras


def _tf_seed(seed_generator):
    import tensorflow as tf

    seed = seed_generator.next()
    if seed.dtype != tf.int32:  # as keras.random does on TensorFlow
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), "int32")
    return seed


def normal(shape, seed_generator, dtype="float32"):
    """Standard normal samples, as `keras.random.normal(shape, seed=...)`.

    Args:
        shape: tuple, output shape.
        seed_generator: a `keras.random.SeedGenerator` (advanced by one draw).
        dtype: float dtype.

    Example:
    >>> import keras
    >>> tuple(normal((2, 3), keras.random.SeedGenerator(0)).shape)
    (2, 3)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_normal(
            shape, seed=_tf_seed(seed_generator), dtype=dtype, alg="philox"
        )
    return keras.random.normal(shape, dtype=dtype, seed=seed_generator)


def uniform(shape, minval, maxval, seed_generator, dtype="float32"):
    """Uniform samples in `[minval, maxval)`, as `keras.random.uniform`.

    Example:
    >>> import keras
    >>> tuple(uniform((2, 3), 0.9, 1.1, keras.random.SeedGenerator(0)).shape)
    (2, 3)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_uniform(
            shape, seed=_tf_seed(seed_generator), minval=tf.cast(minval, dtype),
            maxval=tf.cast(maxval, dtype), dtype=dtype, alg="philox",
        )
    return keras.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed_generator)
