"""Expert parallelism (+ data parallelism) as a `keras.distribution`."""

import numbers

import keras

from keras_sparse_moe.distribution.constraints import DATA_AXIS
from keras_sparse_moe.distribution.constraints import EXPERT_AXIS
from keras_sparse_moe.distribution.constraints import mesh_axis_size
from keras_sparse_moe.distribution.layout_map import expert_layout_map
from keras_sparse_moe.distribution.layout_map import is_expert_variable_path
from keras_sparse_moe.distribution.mesh import expert_device_mesh
from keras_sparse_moe.distribution.mesh import require_jax


class _MultiAxisLayout(keras.distribution.TensorLayout):
    """A `TensorLayout` whose entries may be tuples of mesh axis names
    (one tensor axis split over several mesh axes, as in
    `jax.sharding.PartitionSpec`)."""

    def _validate_axes(self):
        if not self._device_mesh:
            return
        names = set()
        for axis in self._axes:
            if axis is not None:
                names.update(axis if isinstance(axis, tuple) else (axis,))
        unknown = names - set(self._device_mesh.axis_names)
        if unknown:
            raise ValueError(
                f"Invalid mesh axis names {sorted(unknown)} in layout {self._axes}; "
                f"the mesh has {tuple(self._device_mesh.axis_names)}."
            )


class ExpertParallel(keras.distribution.ModelParallel):
    """`ModelParallel` over a `("data", "expert")` mesh for sparse MoE models.

    Expert weights are split along the `"expert"` axis (see
    `expert_layout_map`), every other weight is replicated. The batch is
    split over *both* mesh axes by default (as in GShard / T5X MoE): each
    device routes its own tokens, and the sharding constraints placed by
    `SparseMoE` on the dispatched `(E, G * C, D)` tensor make XLA exchange
    tokens between the devices of an expert group (all-to-all). With
    `shard_batch_over_experts=False` the batch is split along `"data"` only
    and the devices of an expert group see the same examples (the dense
    layers then do redundant work).

    A batch that cannot be split over all devices (e.g. the last, smaller
    batch of `predict`) falls back to splitting over `"data"` only, or to
    replication.

    Build with `expert_parallel_distribution(...)`; create (or load) the
    model inside `distribution.scope()` so its variables get their layout.

    Args:
        layout_map: `keras.distribution.LayoutMap` on a mesh with `"data"`
            and `"expert"` axes.
        shard_batch_over_experts: bool, split the batch over the expert axis
            too.
        auto_shard_dataset: bool, shard `tf.data` inputs between processes
            in multi-process training.

    Example:
    >>> mesh = expert_device_mesh(num_experts=[4])  # JAX backend
    >>> distribution = ExpertParallel(expert_layout_map(mesh))
    >>> distribution.expert_parallel * distribution.data_parallel
    1
    """

    def __init__(self, layout_map, shard_batch_over_experts=True, auto_shard_dataset=True):
        if not isinstance(layout_map, keras.distribution.LayoutMap):
            raise ValueError(
                "Argument `layout_map` must be a `keras.distribution.LayoutMap`; "
                f"received {type(layout_map).__name__}."
            )
        mesh = layout_map.device_mesh
        missing = {DATA_AXIS, EXPERT_AXIS} - set(mesh.axis_names)
        if missing:
            raise ValueError(
                f"Argument `layout_map` must be on a mesh with axes {(DATA_AXIS, EXPERT_AXIS)}; "
                f"received axis names {tuple(mesh.axis_names)}."
            )
        self._shard_batch_over_experts = bool(shard_batch_over_experts)
        self._expert_parallel = mesh_axis_size(mesh, EXPERT_AXIS)
        self._data_parallel = mesh_axis_size(mesh, DATA_AXIS)
        super().__init__(
            layout_map=layout_map,
            batch_dim_name=DATA_AXIS,
            auto_shard_dataset=auto_shard_dataset,
        )

    @property
    def expert_parallel(self):
        """Number of devices the experts are split over."""
        return self._expert_parallel

    @property
    def data_parallel(self):
        """Number of copies of each expert shard."""
        return self._data_parallel

    @property
    def shard_batch_over_experts(self):
        return self._shard_batch_over_experts

    @property
    def num_model_replicas(self):
        if self._shard_batch_over_experts:
            return self._data_parallel * self._expert_parallel
        return self._data_parallel

    def get_data_layout(self, data_shape):
        axes = [None] * len(data_shape)
        batch = data_shape[0] if data_shape else None
        if axes:
            both = self._data_parallel * self._expert_parallel
            if self._shard_batch_over_experts and (batch is None or batch % both == 0):
                axes[0] = (DATA_AXIS, EXPERT_AXIS)
            elif batch is None or batch % self._data_parallel == 0:
                axes[0] = DATA_AXIS
        return _MultiAxisLayout(axes, self.device_mesh)

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        axes = tuple(layout.axes)
        if axes and axes[0] == EXPERT_AXIS and variable.shape[0] % self._expert_parallel:
            raise ValueError(
                f"Variable '{variable.path}' has {variable.shape[0]} experts (shape "
                f"{tuple(variable.shape)}), which cannot be split over the "
                f"{self._expert_parallel} devices of the '{EXPERT_AXIS}' mesh axis. Use a "
                "number of experts divisible by `expert_parallel`, or an `expert_parallel` "
                f"that divides {variable.shape[0]}."
            )
        return layout

    def __repr__(self):
        return (
            f"<ExpertParallel data_parallel={self._data_parallel} "
            f"expert_parallel={self._expert_parallel} "
            f"shard_batch_over_experts={self._shard_batch_over_experts}>"
        )


def model_expert_counts(model):
    """Expert counts of the MoE layers of a Keras layer or model.

    Read from built expert weights (leading axis) and from any sublayer with
    a `num_experts` attribute (e.g. an unbuilt `SparseMoE`).

    Example:
    >>> from keras_sparse_moe import SparseMoE
    >>> model_expert_counts(SparseMoE(num_experts=4, intermediate_dim=8))
    [4]
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a Keras model or layer (or None); received "
            f"{type(model).__name__}."
        )
    counts = set()
    for variable in model.weights:
        if is_expert_variable_path(variable.path) and len(variable.shape) >= 1:
            counts.add(int(variable.shape[0]))
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else [model]
    for layer in layers:
        value = getattr(layer, "num_experts", None)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            counts.add(int(value))
    return sorted(counts)


def expert_parallel_distribution(
    model=None,
    devices=None,
    expert_parallel=None,
    data_parallel=None,
    num_experts=None,
    shard_batch_over_experts=True,
    auto_shard_dataset=True,
):
    """Expert parallelism over a `("data", "expert")` device mesh (JAX).

    Returns a `keras.distribution.ModelParallel` (an `ExpertParallel`) whose
    layout map splits every `SparseMoE` expert weight along the `"expert"`
    mesh axis and replicates the rest; the batch is split over the devices.
    With `expert_parallel=n` each device stores `1/n` of the expert
    parameters (and of their optimizer slots).

    Use it before creating the model:

    ```python
    distribution = expert_parallel_distribution(num_experts=32)
    keras.distribution.set_distribution(distribution)  # or `with distribution.scope():`
    model = build_model()          # or keras.saving.load_model(...) / model.load_weights(...)
    model.compile(...); model.fit(...)
    ```

    Args:
        model: optional Keras model or layer; its MoE expert counts are
            checked against (and used to choose) `expert_parallel`. Its
            existing variables are *not* moved: create or load the model
            under the distribution.
        devices: list of devices; default `keras.distribution.list_devices()`.
        expert_parallel: int, devices splitting the experts. Default: the
            largest divisor of the device count dividing every expert count
            (all devices when no count is known).
        data_parallel: int, replicas of each expert group. Default:
            `len(devices) // expert_parallel`.
        num_experts: int or list of ints, expert counts to check, in
            addition to those read from `model`.
        shard_batch_over_experts: bool, split the batch over the expert axis
            too (GShard-style; default) rather than only over `"data"`.
        auto_shard_dataset: bool, see `keras.distribution.ModelParallel`.

    Returns:
        `ExpertParallel` (a `keras.distribution.ModelParallel`).

    Raises:
        ValueError: if the mesh does not match the device count or an expert
            count is not divisible by `expert_parallel`.
        RuntimeError: on a backend other than JAX.

    Example:
    >>> distribution = expert_parallel_distribution(num_experts=8)  # JAX backend
    >>> distribution.device_mesh.axis_names
    ('data', 'expert')
    """
    require_jax("expert_parallel_distribution")
    counts = [] if model is None else model_expert_counts(model)
    if num_experts is not None:
        counts += [num_experts] if isinstance(num_experts, numbers.Integral) else list(num_experts)
    mesh = expert_device_mesh(
        devices=devices,
        expert_parallel=expert_parallel,
        data_parallel=data_parallel,
        num_experts=counts,
    )
    return ExpertParallel(
        expert_layout_map(mesh),
        shard_batch_over_experts=shard_batch_over_experts,
        auto_shard_dataset=auto_shard_dataset,
    )
