"""keras-hub's `TestCase` with a precision check that knows what computes in
float32 by design.

keras-hub's `run_precision_test` (called by `run_backbone_test`) builds the
model under `mixed_float16`, `mixed_bfloat16` and `bfloat16` (here: the first
and the last, see POLICIES) and asks every output, weight and sublayer to
follow the policy. The MoE models follow it
everywhere except in two documented places, which this check asserts to be
float32 instead of exempting them silently:

- the routers (`Router` subclasses): float32 compute and weights, and the
  `SparseMoE` routing statistics (non-trainable float32 bookkeeping);
- the outputs named in `float32_outputs` (the dual encoders' `logits`, which
  the contrastive head computes in float32 from the embeddings).

Everything else (every other sublayer, weight and output, and the output
spec, here computed from symbolic inputs) is checked as keras-hub checks it,
on every backend (keras-hub's skips torch without CUDA).
"""

import keras
from keras import tree
from keras_hub.src.tests.test_case import TestCase
from keras_hub.src.utils.tensor_utils import is_float_dtype

from keras_sparse_moe.layers.router_base import Router
from keras_sparse_moe.layers.sparse_moe import SparseMoE

# keras-hub checks mixed_float16, mixed_bfloat16 and bfloat16. Two of them
# cover every case (a mixed and a pure policy; float16 and bfloat16 compute):
# each policy builds and calls the model again, eagerly, which is most of a
# backbone test's time on JAX. The layers' own mixed_bfloat16 numerics are in
# tests/layers/test_mixed_precision.py.
POLICIES = ("mixed_float16", "bfloat16")


def _dtype(value):
    return keras.backend.standardize_dtype(value.dtype)


def _symbolic(array):
    # keras-hub passes the arrays themselves; layers that compute their spec
    # from `compute_output_shape` (keras-hub's ViT patch embedding) need
    # symbolic inputs.
    return keras.KerasTensor(tuple(array.shape), dtype=_dtype(array))


def _flat_named(structure):
    """[(key or None, leaf)] of a tensor, list or (one level of) dict."""
    if isinstance(structure, dict):
        return [(key, leaf) for key, value in structure.items() for leaf in tree.flatten(value)]
    return [(None, leaf) for leaf in tree.flatten(structure)]


class FloatRouterTestCase(TestCase):
    """keras-hub `TestCase` whose `run_precision_test` exempts the float32
    routers and the outputs in `float32_outputs`, checking that they are
    float32."""

    float32_outputs = ()

    def run_precision_test(self, cls, init_kwargs, input_data):
        for name in POLICIES:
            policy = keras.DTypePolicy(name)
            # Sub-models passed as arguments (the towers) under the policy too.
            kwargs = {
                key: type(value).from_config({**value.get_config(), "dtype": policy})
                if isinstance(value, keras.Layer) else value
                for key, value in init_kwargs.items()
            }
            model = cls(**{**kwargs, "dtype": policy})
            outputs = model(input_data)
            spec = model.compute_output_spec(tree.map_structure(_symbolic, input_data))
            for structure in (outputs, spec):
                for key, leaf in _flat_named(structure):
                    if not is_float_dtype(leaf.dtype):
                        continue
                    expected = "float32" if key in self.float32_outputs else policy.compute_dtype
                    self.assertEqual(_dtype(leaf), expected, f"{name}: output {key}")

            routers = [layer for layer in model._flatten_layers() if isinstance(layer, Router)]
            float32_weights = {id(weight) for router in routers for weight in router.weights}
            for moe in model._flatten_layers():
                if isinstance(moe, SparseMoE):
                    float32_weights |= {id(moe.stat_dropped_fraction),
                                        id(moe.stat_expert_fraction)}
            for weight in model.weights:
                if is_float_dtype(weight.dtype):
                    expected = "float32" if id(weight) in float32_weights else policy.variable_dtype
                    self.assertEqual(_dtype(weight), expected, f"{name}: {weight.path}")

            for layer in model._flatten_layers():
                if isinstance(layer, (keras.layers.Softmax, keras.layers.InputLayer)):
                    continue
                if isinstance(layer, Router):
                    self.assertEqual(layer.compute_dtype, "float32", layer.path)
                    self.assertEqual(layer.variable_dtype, "float32", layer.path)
                    continue
                self.assertEqual(layer.compute_dtype, policy.compute_dtype,
                                 f"{name}: {layer.name}")
                self.assertEqual(layer.variable_dtype, policy.variable_dtype,
                                 f"{name}: {layer.name}")
