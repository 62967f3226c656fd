"""Expert and data parallelism through `keras.distribution` (JAX backend).

See docs/distributed.md.
"""

from keras_sparse_moe.distribution.constraints import DATA_AXIS
from keras_sparse_moe.distribution.constraints import EXPERT_AXIS
from keras_sparse_moe.distribution.constraints import constrain_expert_tensor
from keras_sparse_moe.distribution.data_parallel import data_parallel_distribution
from keras_sparse_moe.distribution.expert_parallel import ExpertParallel
from keras_sparse_moe.distribution.expert_parallel import expert_parallel_distribution
from keras_sparse_moe.distribution.expert_parallel import model_expert_counts
from keras_sparse_moe.distribution.hlo import collective_bytes
from keras_sparse_moe.distribution.layout_map import expert_layout_map
from keras_sparse_moe.distribution.layout_map import is_expert_variable_path
from keras_sparse_moe.distribution.mesh import expert_device_mesh
from keras_sparse_moe.distribution.processes import check_process_count
from keras_sparse_moe.distribution.processes import initialize_processes

__all__ = [
    "DATA_AXIS",
    "EXPERT_AXIS",
    "ExpertParallel",
    "check_process_count",
    "collective_bytes",
    "constrain_expert_tensor",
    "data_parallel_distribution",
    "expert_device_mesh",
    "expert_layout_map",
    "expert_parallel_distribution",
    "initialize_processes",
    "is_expert_variable_path",
    "model_expert_counts",
]
