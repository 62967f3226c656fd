"""One run at a time in an output directory.

A training recipe holds `run.lock` in its output directory for the whole
run. The lock is an operating-system file lock (`flock`) on that file, which
the kernel releases when the process ends, however it ends: a run killed
with SIGKILL leaves a stale `run.lock` behind, and the next run simply takes
it over. The file records who holds it (PID, host, start time), so a second
run into a busy directory fails at once with a message naming the holder.

On platforms without `fcntl` the lock file is created atomically
(`O_CREAT | O_EXCL`); a lock left there by a process that has ended on the
same host is taken over, one left by another host must be deleted by hand.
"""

import datetime
import functools
import inspect
import json
import logging
import os
import socket

from keras_sparse_moe.recipes.run_state import BACKUP_DIR
from keras_sparse_moe.utils.io import read_json
from keras_sparse_moe.utils.io import remove_atomic_leftovers

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "run.lock"
logger = logging.getLogger(__name__)


class RunDirectoryLocked(RuntimeError):
    """Another live run holds the output directory."""


def _holder(path):
    """The `{"pid", "host", "started"}` record of a lock file, or {}."""
    record = read_json(path)
    return record if isinstance(record, dict) else {}


def _describe(record):
    pid, host = record.get("pid", "?"), record.get("host", "?")
    started = f", started {record['started']}" if record.get("started") else ""
    return f"PID {pid} on host {host}{started}"


def _process_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError, TypeError):
        return True  # exists (another user's), or unknown: assume alive
    return True


class RunLock:
    """Exclusive hold on a run's output directory for the life of the run.

    `acquire()` creates or takes over `directory/run.lock` and writes this
    process's PID and host into it; `release()` (or leaving the `with`
    block) deletes it. While it is held, another `RunLock` on the same
    directory (in this or any other process) fails at once.

    Args:
        directory: the run's output directory (must exist).

    Raises:
        RunDirectoryLocked: from `acquire()`, naming the holder's PID and host
            and how to proceed.

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with RunLock(directory):
    ...     RunLock(directory).acquire()
    Traceback (most recent call last):
    ...
    keras_sparse_moe.recipes.run_lock.RunDirectoryLocked: Output directory ... is in use by another run (PID ...); wait for it to finish or stop it, or use another output directory.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self._fd = None

    def _busy(self, record):
        return RunDirectoryLocked(
            f"Output directory {self.directory!r} is in use by another run ({_describe(record)}); "
            "wait for it to finish or stop it, or use another output directory."
        )

    def _record(self):
        return json.dumps({
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }) + "\n"

    def acquire(self):
        """Take the lock (see the class docstring); returns self."""
        if self._fd is not None:
            raise RuntimeError(f"The lock on {self.directory!r} is already held by this RunLock.")
        if fcntl is None:
            return self._acquire_exclusive_create()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy(_holder(self.path)) from None
            # The holder before us may have deleted the file between our open
            # and our flock: then we locked a file nobody else can see.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _holder(self.path)
        if previous:
            logger.info("Taking over the lock of an earlier run that has ended (%s).",
                        _describe(previous))
        os.ftruncate(fd, 0)
        os.write(fd, self._record().encode("utf-8"))
        self._fd = fd
        return self

    def _acquire_exclusive_create(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                record = _holder(self.path)
                stale = (record.get("host") == socket.gethostname()
                         and not _process_alive(record.get("pid")))
                if not stale:
                    raise self._busy(record) from None
                # A process of this host that has ended: take over its lock,
                # unless another run took it over first (then give it back).
                stale_path = f"{self.path}.stale-{os.getpid()}"
                try:
                    os.rename(self.path, stale_path)
                except OSError:
                    continue
                if _holder(stale_path) != record:
                    try:
                        os.rename(stale_path, self.path)
                    except OSError:
                        pass
                    raise self._busy(_holder(self.path)) from None
                logger.info("Taking over the lock of an earlier run that has ended (%s).",
                            _describe(record))
                os.remove(stale_path)
                continue
            os.write(fd, self._record().encode("utf-8"))
            self._fd = fd
            return self
        raise self._busy(_holder(self.path))

    def release(self):
        """Give the lock up and delete the lock file."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)  # before unlocking: no one can lock the old file meanwhile
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def exclusive_run(function):
    """Decorator of a training recipe with an `output_dir` argument: the call
    holds the directory's `RunLock` from start to end, and starts by deleting
    what an interrupted run left half-done there (`remove_stale_files`).

    The directory is created for the lock; if the call fails before writing
    anything into it, the empty directory is removed again. An `output_dir`
    that is not a usable directory is left to the recipe's own checks.
    """
    from keras_sparse_moe.utils.io import check_writable_directory

    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        output_dir = bound.arguments.get("output_dir")
        if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir):
            return function(*args, **kwargs)
        output_dir = os.fspath(output_dir)
        created = not os.path.exists(output_dir)
        try:
            check_writable_directory(output_dir)
        except ValueError:
            return function(*args, **kwargs)  # its own message, in its own order
        try:
            with RunLock(output_dir):
                remove_stale_files(output_dir)
                return function(*args, **kwargs)
        finally:
            if created:
                try:
                    os.rmdir(output_dir)  # only if empty: nothing was written
                except OSError:
                    pass

    return run


def remove_stale_files(output_dir):
    """Delete what interrupted atomic writes left half-done in `output_dir`
    and its `backup/`: the `.tmp-*` and `.old-*` files and directories.
    (Rows of `log.csv` for epochs that `backup/` does not hold are dropped
    by the CSV logger of `make_callbacks` when the resumed run starts.)

    Call it only while holding the directory's `RunLock` (another run's
    temporary files are not stale).

    Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> _ = open(os.path.join(directory, ".tmp-abc.keras"), "w").write("half")
    >>> remove_stale_files(directory)
    >>> os.listdir(directory)
    []
    """
    if not os.path.isdir(output_dir):
        return
    for directory in (output_dir, os.path.join(output_dir, BACKUP_DIR)):
        remove_atomic_leftovers(directory)
