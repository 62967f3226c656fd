"""JAX's persistent compilation cache for the command line.

Each `keras-sparse-moe` command is a new process, and on JAX much of a short
command (evaluating the digits preset: the preset's random initializers, the
batched pass, the single-image latency) is XLA compiling the same programs as
last time. The command line keeps JAX's own on-disk cache of compiled
programs, so a repeated command loads them instead of compiling again.

The cache directory is `$XDG_CACHE_HOME/keras_sparse_moe/jax` (by default
`~/.cache/keras_sparse_moe/jax`); `KERAS_SPARSE_MOE_JAX_CACHE=DIR` chooses
another, `KERAS_SPARSE_MOE_JAX_CACHE=off` turns it off, and a cache set with
JAX's own `JAX_COMPILATION_CACHE_DIR` is left as it is. Python users opt in
with `jax.config.update("jax_compilation_cache_dir", DIR)` themselves.
"""

import os

CACHE_VARIABLE = "KERAS_SPARSE_MOE_JAX_CACHE"
_OFF = ("0", "off", "false", "no", "none")


def cache_directory(environ):
    """The cache directory the environment asks for, or None when off.

    Example:
    >>> cache_directory({"XDG_CACHE_HOME": "/c"})
    '/c/keras_sparse_moe/jax'
    >>> cache_directory({"KERAS_SPARSE_MOE_JAX_CACHE": "/tmp/x"}), cache_directory({"KERAS_SPARSE_MOE_JAX_CACHE": "off"})
    ('/tmp/x', None)
    """
    setting = environ.get(CACHE_VARIABLE, "").strip()
    if setting.lower() in _OFF and setting:
        return None
    if setting:
        return setting
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_sparse_moe", "jax")


def enable_jax_compilation_cache(environ=None):
    """Turn on JAX's persistent compilation cache for this process (JAX
    backend only; call it before the first compile). Returns the directory
    in use, or None (another backend, turned off, or not writable)."""
    environ = os.environ if environ is None else environ
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own (JAX_COMPILATION_CACHE_DIR)
        return jax.config.jax_compilation_cache_dir
    directory = cache_directory(environ)
    if directory is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as without the cache
    if not os.access(directory, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    # Cache every program: the small ones are what a short command compiles.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
