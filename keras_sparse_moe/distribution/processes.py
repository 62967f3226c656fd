"""Starting JAX on several processes (hosts) for expert parallelism."""

import keras

from keras_sparse_moe.distribution.mesh import require_jax
from keras_sparse_moe.utils.validation import check_int


def check_process_count(num_processes):
    """Raise a `ValueError` unless JAX runs exactly `num_processes` processes.

    Example:
    >>> check_process_count(1)  # JAX backend, one process
    """
    require_jax("check_process_count")
    import jax

    num_processes = check_int("num_processes", num_processes, minimum=1)
    actual = jax.process_count()
    if actual != num_processes:
        raise ValueError(
            f"Expected {num_processes} processes but JAX runs {actual}: start the script once "
            f"per process with the same num_processes={num_processes} and call "
            "`initialize_processes` (or `keras.distribution.initialize`) before any other "
            "JAX or Keras call."
        )


def initialize_processes(coordinator_address, num_processes, process_id):
    """`keras.distribution.initialize` with checked arguments (JAX).

    Call it first in every process, with the same `coordinator_address`
    and `num_processes` and each process's own `process_id`; afterwards
    `keras.distribution.list_devices()` returns the devices of all
    processes, and `expert_parallel_distribution()` spans them.

    Args:
        coordinator_address: `"host:port"` of process 0.
        num_processes: int >= 1, processes in the job.
        process_id: int in `[0, num_processes)`.

    Raises:
        ValueError: on a malformed address, a `process_id` out of range,
            or when JAX does not see `num_processes` processes afterwards.

    Example:
    >>> initialize_processes("localhost:1234", num_processes=2, process_id=2)
    Traceback (most recent call last):
    ...
    ValueError: Argument `process_id` must be in [0, 2) for num_processes=2; received 2. Give every process its own id 0..1.
    """
    require_jax("initialize_processes")
    num_processes = check_int("num_processes", num_processes, minimum=1)
    process_id = check_int("process_id", process_id, minimum=0)
    if process_id >= num_processes:
        raise ValueError(
            f"Argument `process_id` must be in [0, {num_processes}) for "
            f"num_processes={num_processes}; received {process_id}. Give every process its "
            f"own id 0..{num_processes - 1}."
        )
    host, _, port = str(coordinator_address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            "Argument `coordinator_address` must be 'host:port' of process 0, e.g. "
            f"'10.0.0.1:1234'; received {coordinator_address!r}."
        )
    keras.distribution.initialize(
        job_addresses=str(coordinator_address), num_processes=num_processes,
        process_id=process_id,
    )
    check_process_count(num_processes)
