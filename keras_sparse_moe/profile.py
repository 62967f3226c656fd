"""Parameter and FLOP profile of Keras models with sparse MoE layers.

`profile(model)` works for any Keras model (functional, sequential or
subclassed) containing `SparseMoE` layers, at any nesting depth: it walks
the sublayers, runs one forward pass on a tiny constant batch while
recording the input/output shape of every matmul-carrying layer, and counts
FLOPs analytically from those shapes and the layers' weights.
`profile_config(backbone_cls, config)` returns the same numbers from a
config without allocating any weight (for paper-sized presets) for a
backbone class with a `profile_config(config)` class method (`MoEViTBackbone`)
or a profiler registered with `register_config_profiler` (keras-hub's
`ViTBackbone`); other classes are built and profiled.

Conventions (also in `ModelProfile`'s docstring):

- **Parameters** are trainable weights; non-trainable variables (e.g. the
  routing statistics of `SparseMoE`) are reported apart.
- **Active parameters per token** are the parameters that a token's output
  depends on at inference: every non-expert weight (embeddings, attention,
  norms, dense MLPs, heads, the routers), plus per `SparseMoE` layer
  `experts_per_token` experts' weights instead of all `num_experts`:
  `top_k` for token choice (an upper bound: a dropped assignment uses one
  expert less), `num_experts * capacity_eval / group_size` for expert choice
  (the average number of experts that pick a token), and all `num_experts`
  for Soft MoE (every slot mixes all tokens of the group and every token
  mixes all slots, so every expert touches every token; its *compute* per
  token is `num_experts * slots_per_expert / group_size` experts, which the
  FLOPs show).
- **FLOPs** are per example of the forward pass, 1 multiply-add = 2 FLOPs,
  counting only matrix products: `Dense`/`EinsumDense`/convolution kernels
  (patch embedding, attention Q/K/V/output projections, MLPs, heads), the
  attention score (`QK^T`) and value (`AV`) products, router projections,
  the expert MLPs, and Soft MoE's dispatch and combine mixing products.
  Biases, norms, activations, softmax, top-k, gathers and scatters are not
  counted. Experts are counted on every capacity slot the layer computes,
  filled or not: `num_groups * num_experts * capacity` slots, which is the
  static cost of this implementation. A dropless token-choice layer
  (`capacity_factor=None`) on the padded path computes `group_size` slots
  per expert; on the ragged path (`dropless_impl`, JAX and PyTorch by
  default) it computes exactly `top_k` expert rows per token, and its
  capacity is reported as the group size. The figures therefore depend on
  the backend for dropless layers.
  `flops` uses the inference capacity (`eval_capacity_factor`),
  `flops_train` the training capacity (forward only; a backward pass costs
  about twice the forward).
"""

from keras_sparse_moe.profiling import ModelProfile
from keras_sparse_moe.profiling import MoELayerProfile
from keras_sparse_moe.profiling import config_profiler
from keras_sparse_moe.profiling import profile
from keras_sparse_moe.profiling import profile_config
from keras_sparse_moe.profiling import register_config_profiler

__all__ = [
    "ModelProfile",
    "MoELayerProfile",
    "config_profiler",
    "profile",
    "profile_config",
    "register_config_profiler",
]
