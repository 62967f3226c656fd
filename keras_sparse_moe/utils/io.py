"""Atomic file writes: write to a temporary path beside the target, then
rename, so a crash never leaves a half-written artifact that later loads."""

import contextlib
import glob
import json
import os
import shutil
import tempfile


def check_writable_directory(directory, create=True):
    """Create `directory` if asked and check that files can be written there.

    Raises:
        ValueError naming the directory and the problem.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"Output directory {directory!r} exists and is not a directory.")
    if create:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise ValueError(f"Cannot create output directory {directory!r}: {error.strerror}.") from None
    if not os.path.isdir(directory):
        raise ValueError(f"Output directory {directory!r} does not exist.")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError:
        raise ValueError(f"Output directory {directory!r} is not writable.") from None
    return directory


def default_permissions(path):
    """Give `path` the permissions a normal `open()` / `mkdir()` would
    (0o666 / 0o777 minus the umask): `tempfile` creates private 0o600 /
    0o700 entries, which would otherwise survive the atomic rename."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary file path beside `path`; rename it to `path` on success.

    Example:
    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("hi")
    >>> open(target).read()
    'hi'
    """
    path = _check_file_target(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1],
                                   dir=directory)
    except OSError as error:
        raise ValueError(f"Cannot write {path!r}: {error.strerror}.") from None
    os.close(fd)
    try:
        yield tmp
        default_permissions(tmp)
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise ValueError(f"Cannot write {path!r}: {error.strerror}.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_writable_file(path):
    """Check that a file can be written at `path` (before any long work).

    `path` must not be a directory, and its directory must exist and be
    writable.

    Returns:
        `path` as a string.

    Raises:
        ValueError naming the path and the problem.

    Example:
    >>> import tempfile
    >>> check_writable_file(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ValueError: Cannot write ...: it is a directory; give a file name.
    """
    path = _check_file_target(path)
    try:
        check_writable_directory(os.path.dirname(os.path.abspath(path)), create=False)
    except ValueError as error:
        raise ValueError(f"Cannot write {path!r}: {error}") from None
    return path


def _check_file_target(path):
    """`path` as a string, unless it is empty or an existing directory (a file
    cannot replace one)."""
    path = os.fspath(path)
    if not path:
        raise ValueError("Cannot write a file at an empty path; give a file name.")
    if os.path.isdir(path):
        raise ValueError(f"Cannot write {path!r}: it is a directory; give a file name.")
    return path


def atomic_write_text(path, text):
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def _json_default(value):
    """What `json` cannot write: NumPy scalars and arrays as Python numbers
    and lists, anything else as its `str`."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, obj):
    """Write `obj` as indented JSON, atomically (temporary file + rename).
    NumPy scalars and arrays become numbers and lists, other values `json`
    cannot write their `str`.

    Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> write_json(path, {"accuracy": np.float32(0.5)})
    >>> open(path).read()
    '{\\n  "accuracy": 0.5\\n}\\n'
    """
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path):
    """The JSON document at `path`, or None if it is missing or unreadable.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.json")
    >>> read_json(path) is None
    True
    >>> write_json(path, {"status": "running"})
    >>> read_json(path)
    {'status': 'running'}
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def atomic_save_model(model, path):
    """`model.save(path)` (a `.keras` file) atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _reason(error):
    """The useful part of an h5py / zipfile error: h5py's message in
    parentheses ("truncated file: eof = ..."), else the first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    start, end = text.find("("), text.rfind(")")
    return text[start + 1:end] if 0 <= start < end else text


def check_hdf5_file(path, what="Weights file"):
    """Raise a `ValueError` naming `path` unless it is an HDF5 file that
    opens (an empty, truncated or overwritten `.weights.h5` file fails here
    with one line instead of an h5py traceback).

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.weights.h5")
    >>> _ = open(path, "wb").write(b"\\x89HDF\\r\\n\\x1a\\n" + bytes(8))
    >>> check_hdf5_file(path)
    Traceback (most recent call last):
    ...
    ValueError: Weights file '...model.weights.h5' is truncated or corrupt (...); it cannot be read.
    """
    import h5py

    path = os.fspath(path)
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as error:
        raise ValueError(
            f"{what} {path!r} is truncated or corrupt ({_reason(error)}); it cannot be read."
        ) from None


def check_keras_archive(path):
    """Raise unless `path` is a complete `.keras` archive: a missing file
    (`FileNotFoundError`), a file that is not a zip archive, or one whose
    members are truncated or damaged (`ValueError`), each naming the file.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.keras")
    >>> _ = open(path, "w").write("not a model")
    >>> check_keras_archive(path)
    Traceback (most recent call last):
    ...
    ValueError: ... is not a Keras model file: a .keras file is a zip archive saved by model.save(); this one is not (empty, text or truncated?).
    """
    import zipfile
    import zlib

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a Keras model file: a .keras file is a zip archive saved by "
            "model.save(); this one is not (empty, text or truncated?)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"Keras model file {path!r} is damaged ({_reason(error)}).") from None
    if damaged is not None:
        raise ValueError(
            f"Keras model file {path!r} is damaged: its member {damaged!r} does not match its "
            "checksum (truncated or overwritten?)."
        )
    if "config.json" not in names:
        raise ValueError(
            f"{path!r} is not a Keras model file: the archive has no config.json (a .keras "
            "file is written by model.save())."
        )


def load_keras_file(path, **kwargs):
    """`keras.saving.load_model(path, safe_mode=True, **kwargs)` with clear
    errors: a missing file, a file that is not a `.keras` archive (empty,
    text, truncated) or a damaged one is named as such instead of Keras's
    "File not found" or an h5py traceback.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.keras")
    >>> _ = open(path, "w").write("not a model")
    >>> load_keras_file(path)
    Traceback (most recent call last):
    ...
    ValueError: ... is not a Keras model file: a .keras file is a zip archive saved by model.save(); this one is not (empty, text or truncated?).
    """
    import keras

    path = os.fspath(path)
    check_keras_archive(path)
    kwargs.setdefault("safe_mode", True)
    try:
        return keras.saving.load_model(path, **kwargs)
    except OSError as error:  # h5py: a damaged weights file inside the archive
        raise ValueError(
            f"Keras model file {path!r} is damaged: its weights cannot be read "
            f"({_reason(error)})."
        ) from None


def remove_atomic_leftovers(directory):
    """Delete what interrupted atomic writes (`atomic_path`,
    `atomic_directory`) left in `directory`: its `.tmp-*` and `.old-*`
    files and folders. Call it only where no other process writes (e.g.
    while holding a run's lock).

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(directory, ".old-preset-x", "assets"))
    >>> _ = open(os.path.join(directory, "kept.json"), "w").write("{}")
    >>> remove_atomic_leftovers(directory)
    >>> os.listdir(directory)
    ['kept.json']
    """
    for pattern in (".tmp-*", ".old-*"):
        for path in glob.glob(os.path.join(directory, pattern)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory beside `path`; on success it replaces `path`.

    An existing `path` is moved aside and removed only after the rename.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        yield tmp
        default_permissions(tmp)
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
