"""Result objects of the profiler: `ModelProfile` and `MoELayerProfile`
(conventions in `keras_sparse_moe.profile`), and the active-experts rule
they share."""

import dataclasses


# ----------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class MoELayerProfile:
    """Profile of one `SparseMoE` layer (see the module docstring).

    Attributes:
        name: path of the layer inside the profiled model, e.g.
            `"encoder_block_1/moe"`.
        router: `"token_choice"`, `"expert_choice"` or `"soft"`.
        num_experts: experts of the layer.
        top_k: experts per token (token/expert choice; 1 for soft).
        group_size: tokens per routing group.
        capacity_train, capacity_eval: slots per expert and group in
            training and at inference (soft: `slots_per_expert`).
        experts_per_token: experts counted as active per token.
        params: trainable parameters of the layer (router + all experts).
        params_router: trainable parameters of the router.
        params_per_expert: trainable parameters of one expert.
        params_active: `params_router + experts_per_token * params_per_expert`.
        flops: FLOPs per example at inference capacity.
        flops_train: FLOPs per example at training capacity (forward).
    """

    name: str
    router: str
    num_experts: int
    top_k: int
    group_size: int
    capacity_train: int
    capacity_eval: int
    experts_per_token: float
    params: int
    params_router: int
    params_per_expert: int
    params_active: int
    flops: int
    flops_train: int

    def to_dict(self):
        """The profile as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ModelProfile:
    """Parameters and FLOPs of a model (see the module docstring for the
    conventions).

    Attributes:
        name: model name.
        input_shape: per-example input shape(s) used for the FLOPs.
        params_total: trainable parameters.
        params_non_trainable: non-trainable variables' elements.
        params_active: trainable parameters active per token.
        flops: forward FLOPs per example at inference capacity.
        flops_train: forward FLOPs per example at training capacity.
        moe_layers: list of `MoELayerProfile`, in layer order.
        uncounted_layers: paths of layers of a type this profiler does not
            know that own a weight matrix (rank >= 2), so may hide matrix
            products that are not in `flops`.
    """

    name: str
    input_shape: object
    params_total: int
    params_non_trainable: int
    params_active: int
    flops: int
    flops_train: int
    moe_layers: list
    uncounted_layers: list = dataclasses.field(default_factory=list)

    @property
    def gflops(self):
        """`flops / 1e9`."""
        return self.flops / 1e9

    @property
    def num_moe_layers(self):
        return len(self.moe_layers)

    def to_dict(self):
        """The profile as a plain (JSON-serialisable) dict."""
        result = dataclasses.asdict(self)
        result["input_shape"] = _jsonable_shape(self.input_shape)
        return result

    def __str__(self):
        lines = [
            f"Model: {self.name}  (input per example: {self.input_shape})",
            f"  parameters (trainable):     {self.params_total:>16,}",
            f"  parameters active / token:  {self.params_active:>16,}",
            f"  non-trainable variables:    {self.params_non_trainable:>16,}",
            f"  GFLOPs / example (eval):    {self.flops / 1e9:>16.3f}",
            f"  GFLOPs / example (train):   {self.flops_train / 1e9:>16.3f}",
            f"  MoE layers:                 {len(self.moe_layers):>16}",
        ]
        if self.moe_layers:
            width = max(len("layer"), *(len(m.name) for m in self.moe_layers))
            header = (
                f"  {'layer':<{width}} {'router':<13} {'E':>4} {'k':>2} {'group':>6} "
                f"{'cap tr/ev':>10} {'params':>13} {'active':>12} {'GFLOPs':>9}"
            )
            lines += ["", header, "  " + "-" * (len(header) - 2)]
            for moe in self.moe_layers:
                capacity = f"{moe.capacity_train}/{moe.capacity_eval}"
                lines.append(
                    f"  {moe.name:<{width}} {moe.router:<13} {moe.num_experts:>4} {moe.top_k:>2} "
                    f"{moe.group_size:>6} {capacity:>10} {moe.params:>13,} "
                    f"{moe.params_active:>12,} {moe.flops / 1e9:>9.4f}"
                )
        if self.uncounted_layers:
            lines.append(
                "  FLOPs not counted for (unknown layer types): "
                + ", ".join(self.uncounted_layers)
            )
        return "\n".join(lines)


def _jsonable_shape(shape):
    if isinstance(shape, dict):
        return {k: _jsonable_shape(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple, dict)):
        return [_jsonable_shape(s) for s in shape]
    return list(shape) if isinstance(shape, (list, tuple)) else shape
