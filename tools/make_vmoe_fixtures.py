"""Writes the V-MoE / Soft MoE reference fixture under tests/fixtures/vmoe/.

The fixture is produced by google-research/vmoe's own code (routers,
dispatchers, VisionTransformerMoe, Soft MoE router and the sharded checkpoint
writer), so that keras-sparse-moe's converter and routing layers can be checked
against the reference implementation without vmoe, flax or the network at test
time. This script is NOT part of the package and is never imported by it or by
the tests; it only needs to run again when the fixture must be regenerated.

What it writes (all under --out, default tests/fixtures/vmoe):

  manifest.json       vmoe / vision_transformer commits, jax/flax/numpy versions,
                      seed, and the list of files.
  routing.json        one line per routing case: router, E, k, capacity factor,
                      group size S, batch priority, capacity policy, vmoe's
                      capacity (an int), vmoe's metrics (aux losses, as
                      float32 values written as JSON numbers) and the keys of
                      the case's arrays in routing.npz.
  routing.npz         inputs, router parameters, vmoe's gating logits and gates,
                      and the dispatch/combine tensors of every routing case.
  models/<name>/      one small random VisionTransformerMoe per folder:
      config.json     the vmoe model config (ml_collections dict) the params
                      were built with.
      variants.json   every evaluated variant's full model config (same params,
                      other router/dispatcher options).
      tree.json       parameter path -> [shape, dtype] of the checkpoint.
      params.index, params.data-0000N-of-00002
                      the params written by vmoe.checkpoints.partitioned.
                      save_checkpoint (2 shards, small chunks so that arrays are
                      split across chunks and shards).
      params.msgpack  the same params as flax.serialization.to_bytes (for the
                      models named in MSGPACK_MODELS).
      io.npz          input images, and per variant: vmoe's logits, flattened
                      metrics and, per MoE layer, the layer input, gates and the
                      dispatch/combine tensors (encoding in tools/README.md).

Regenerate (see tools/README.md for the environment):

  /work/venv-vmoe/bin/python tools/make_vmoe_fixtures.py \
      --vmoe-src /path/to/vmoe --vit-src /path/to/vision_transformer \
      --vmoe-commit <sha> --vit-commit <sha>

--only soft_moe_token writes just that model into an existing fixture folder
and updates its manifest (see OWN_RNG_MODELS).

--vmoe-src is a checkout of https://github.com/google-research/vmoe and
--vit-src one of https://github.com/google-research/vision_transformer (vmoe's
vmoe/nn/vit_moe.py imports `vit_jax.models_vit` from it). Neither is copied
into this repository. The script is deterministic for a given seed and
library versions.
"""

import argparse
import functools
import json
import math
import os
import shutil
import sys


def _parse_args():
  here = os.path.dirname(os.path.abspath(__file__))
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vmoe-src', required=True,
                      help='checkout of google-research/vmoe (the folder '
                      'that holds the vmoe/ package).')
  parser.add_argument('--vit-src', required=True,
                      help='checkout of google-research/vision_transformer '
                      '(the folder that holds the vit_jax/ package).')
  parser.add_argument('--vmoe-commit', default='unknown',
                      help='commit of --vmoe-src, recorded in manifest.json.')
  parser.add_argument('--vit-commit', default='unknown',
                      help='commit of --vit-src, recorded in manifest.json.')
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(here), 'tests', 'fixtures', 'vmoe'))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--only', default=None,
                      help='comma-separated model names: write only these '
                      'models (of OWN_RNG_MODELS) into an existing --out and '
                      'update its manifest.json; routing cases and the other '
                      'models are left as they are.')
  return parser.parse_args()


ARGS = _parse_args()
sys.path.insert(0, os.path.abspath(ARGS.vit_src))
sys.path.insert(0, os.path.abspath(ARGS.vmoe_src))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax
import flax.linen as nn
import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import vmoe.moe
from vmoe.checkpoints import partitioned
from vmoe.nn import models as vmoe_models
from vmoe.nn import routing
from vmoe.projects.soft_moe import router as soft_router
# pylint: enable=g-import-not-at-top,wrong-import-position

NUM_GROUPS = 2          # G: groups routed independently.
MODEL_DIM = 8           # D: token dimension in the routing cases.
EXPERTS = (4, 8)
TOP_K = (1, 2)
CAPACITY_FACTORS = (1.0, 1.05, 1.25, 2.0)
GROUP_SIZES = (16, 33, 65)
SOFT_GROUP_SIZES = (16, 33)  # Soft MoE tensors are dense: keep them small.
SOFT_ROUTER_NAME = 'vmoe.projects.soft_moe.router.SoftRouter'
# Models whose params are also written as a plain flax msgpack (all models are
# written with vmoe's sharded checkpoint writer).
MSGPACK_MODELS = ('vmoe_token', 'soft_moe_gap')
# Models drawing their random values from their own generator (seeded from
# --seed and their position in model_specs) rather than from the generator
# shared with the routing cases and the models before them: they come out the
# same whether written by a full run or alone with --only.
OWN_RNG_MODELS = ('soft_moe_token',)


def fmt_cf(cf):
  return f'{cf:g}'


def to_np(x):
  return np.asarray(jax.device_get(x))


def slots_from_dispatch(dispatch):
  """(G, S, E, C) bool -> (G, S, E) int16 buffer slot, -1 if not dispatched."""
  dispatch = np.asarray(dispatch, dtype=bool)
  if dispatch.sum(axis=-1).max(initial=0) > 1:
    raise AssertionError('an (item, expert) pair uses more than one slot')
  slot = np.where(dispatch.any(-1), dispatch.argmax(-1), -1)
  return slot.astype(np.int16)


def dispatch_from_slots(slot, capacity):
  return slot[..., None] == np.arange(capacity)


def check_compact_encoding(dispatch, combine, gates, slot, capacity):
  """The stored (slot, gates) must rebuild vmoe's tensors bit for bit."""
  rebuilt_dispatch = dispatch_from_slots(slot, capacity)
  assert np.array_equal(rebuilt_dispatch, np.asarray(dispatch, bool))
  rebuilt_combine = np.where(rebuilt_dispatch, gates[..., None],
                             np.float32(0)).astype(np.float32)
  assert np.array_equal(rebuilt_combine, np.asarray(combine, np.float32)), (
      'combine != gates * dispatch')


def flat_metrics(metrics, prefix=''):
  out = {}
  for key, value in flax.traverse_util.flatten_dict(
      jax.tree_util.tree_map(to_np, dict(metrics)), sep='/').items():
    out[prefix + key] = np.asarray(value, dtype=np.float32)
  return out


def _f32_tree(value):
  """Shortest decimal that casts back to the same float32 (for JSON)."""
  if isinstance(value, list):
    return [_f32_tree(v) for v in value]
  return float(str(np.float32(value)))


def json_metrics(metrics):
  # Parsing these numbers and casting to float32 gives vmoe's values exactly.
  return {k: _f32_tree(v.tolist()) for k, v in metrics.items()}


def capture_dense_logits(router, params, x, **kwargs):
  """Applies a vmoe router, also returning the output of its 'dense' layer."""
  out, state = router.apply(
      {'params': params}, x,
      capture_intermediates=lambda mdl, name: mdl.name == 'dense',
      mutable=['intermediates'], **kwargs)
  logits = state['intermediates']['dense']['__call__'][0]
  return out, logits


# ----------------------------------------------------------------------------
# Routing cases.
# ----------------------------------------------------------------------------


def token_choice_case(arrays, cases, x, kernel, E, k, cf, S, batch_priority):
  case_id = (f'tc-E{E}-k{k}-cf{fmt_cf(cf)}-S{S}-bp{int(batch_priority)}')
  router = routing.NoisyTopExpertsPerItemRouter(
      num_experts=E, num_selected_experts=k, noise_std=1.0,
      gshard_loss_weight=0.0, importance_loss_weight=1.0, load_loss_weight=1.0,
      deterministic=True,
      dispatcher={'name': 'einsum', 'capacity_factor': cf,
                  'batch_priority': batch_priority})
  (dispatcher, metrics), logits = capture_dense_logits(
      router, {'dense': {'kernel': kernel}}, x)
  gates = to_np(jax.nn.softmax(logits))
  dispatch = to_np(dispatcher.dispatch_weights)
  combine = to_np(dispatcher.combine_weights)
  capacity = dispatch.shape[-1]
  expected = vmoe.moe.compute_capacity(S * k, E, cf, 'ceil', 4)
  assert capacity == expected, (capacity, expected)
  slot = slots_from_dispatch(dispatch)
  check_compact_encoding(dispatch, combine, gates, slot, capacity)
  arrays[f'{case_id}/slot'] = slot
  metrics = flat_metrics(metrics)
  cases.append({
      'id': case_id, 'router': 'NoisyTopExpertsPerItemRouter',
      'num_experts': E, 'num_selected_experts': k, 'capacity_factor': cf,
      'group_size': S, 'batch_priority': batch_priority,
      'capacity_ceil_or_round': 'ceil', 'capacity_multiple_of': 4,
      'capacity': int(capacity), 'deterministic': True,
      'inputs': f'inputs-S{S}', 'kernel': f'kernel-E{E}',
      'logits': f'logits-E{E}-S{S}', 'gates': f'gates-E{E}-S{S}',
      'slot': f'{case_id}/slot',
      'dropped_assignments': int(NUM_GROUPS * S * k - dispatch.sum()),
      'metrics': json_metrics(metrics),
  })
  return logits


def token_choice_noisy_case(arrays, cases, x, kernel, E, k, cf, S,
                            batch_priority, seed):
  """Noisy (training-mode) token choice, with the exact noise vmoe drew.

  vmoe draws the noise with `self.make_rng('gating')` inside the router. For a
  router applied at the top level that key depends only on the rng passed to
  `apply`, the (empty) module path and the call count, so a probe module calling
  make_rng('gating') once at the top level receives the same key. The noise is
  recomputed that way, stored, and the router's dispatch is checked against a
  dispatch computed from logits + stored noise with vmoe's own dispatcher.
  """
  case_id = (f'tcnoisy-E{E}-k{k}-cf{fmt_cf(cf)}-S{S}-bp{int(batch_priority)}')
  noise_std = 1.0
  router = routing.NoisyTopExpertsPerItemRouter(
      num_experts=E, num_selected_experts=k, noise_std=noise_std,
      gshard_loss_weight=0.0, importance_loss_weight=1.0, load_loss_weight=1.0,
      deterministic=False,
      dispatcher={'name': 'einsum', 'capacity_factor': cf,
                  'batch_priority': batch_priority})
  rng = jax.random.PRNGKey(seed)
  (dispatcher, metrics), logits = capture_dense_logits(
      router, {'dense': {'kernel': kernel}}, x, rngs={'gating': rng})

  class Probe(nn.Module):

    @nn.compact
    def __call__(self, shape):
      return jax.random.normal(key=self.make_rng('gating'), shape=shape)

  normal = Probe().apply({}, logits.shape, rngs={'gating': rng})
  scaled_noise = (1.0 / E) * noise_std * normal
  noisy_logits = logits + scaled_noise
  gates_noisy = jax.nn.softmax(noisy_logits)
  rebuilt = jax.vmap(functools.partial(
      vmoe.moe.get_top_experts_per_item_dispatcher, name='einsum',
      num_selected_experts=k, batch_priority=batch_priority,
      capacity_factor=cf))(gates_noisy)
  dispatch = to_np(dispatcher.dispatch_weights)
  combine = to_np(dispatcher.combine_weights)
  assert np.array_equal(to_np(rebuilt.dispatch_weights), dispatch)
  assert np.array_equal(to_np(rebuilt.combine_weights), combine)
  capacity = dispatch.shape[-1]
  slot = slots_from_dispatch(dispatch)
  check_compact_encoding(dispatch, combine, to_np(gates_noisy), slot, capacity)
  arrays[f'{case_id}/normal'] = to_np(normal).astype(np.float32)
  arrays[f'{case_id}/noisy_logits'] = to_np(noisy_logits)
  arrays[f'{case_id}/gates_noisy'] = to_np(gates_noisy)
  arrays[f'{case_id}/slot'] = slot
  metrics = flat_metrics(metrics)
  cases.append({
      'id': case_id, 'router': 'NoisyTopExpertsPerItemRouter',
      'num_experts': E, 'num_selected_experts': k, 'capacity_factor': cf,
      'group_size': S, 'batch_priority': batch_priority,
      'capacity_ceil_or_round': 'ceil', 'capacity_multiple_of': 4,
      'capacity': int(capacity), 'deterministic': False,
      'noise_std': noise_std, 'effective_noise_std': noise_std / E,
      'inputs': f'inputs-S{S}', 'kernel': f'kernel-E{E}',
      'logits': f'logits-E{E}-S{S}', 'normal': f'{case_id}/normal',
      'noisy_logits': f'{case_id}/noisy_logits',
      'gates': f'{case_id}/gates_noisy', 'slot': f'{case_id}/slot',
      'dropped_assignments': int(NUM_GROUPS * S * k - dispatch.sum()),
      'metrics': json_metrics(metrics),
  })


def expert_choice_case(arrays, cases, x, kernel, E, cf, S, policy):
  ceil_or_round, multiple_of = policy
  case_id = f'ec-E{E}-cf{fmt_cf(cf)}-S{S}-{ceil_or_round}{multiple_of}'
  router = routing.NoisyTopItemsPerExpertRouter(
      num_experts=E, noise_std=1.0, deterministic=True,
      dispatcher={'name': 'einsum', 'capacity_factor': cf,
                  'capacity_ceil_or_round': ceil_or_round,
                  'capacity_multiple_of': multiple_of})
  (dispatcher, metrics), logits = capture_dense_logits(
      router, {'dense': {'kernel': kernel}}, x)
  gates = to_np(jax.nn.softmax(logits))
  dispatch = to_np(dispatcher.dispatch_weights)
  combine = to_np(dispatcher.combine_weights)
  capacity = dispatch.shape[-1]
  expected = vmoe.moe.compute_capacity(S, E, cf, ceil_or_round, multiple_of)
  assert capacity == expected, (capacity, expected)
  slot = slots_from_dispatch(dispatch)
  check_compact_encoding(dispatch, combine, gates, slot, capacity)
  arrays[f'{case_id}/slot'] = slot
  metrics = flat_metrics(metrics)
  cases.append({
      'id': case_id, 'router': 'NoisyTopItemsPerExpertRouter',
      'num_experts': E, 'capacity_factor': cf, 'group_size': S,
      'capacity_ceil_or_round': ceil_or_round,
      'capacity_multiple_of': multiple_of, 'capacity': int(capacity),
      'deterministic': True,
      'inputs': f'inputs-S{S}', 'kernel': f'kernel-E{E}',
      'logits': f'logits-E{E}-S{S}', 'gates': f'gates-E{E}-S{S}',
      'slot': f'{case_id}/slot', 'metrics': json_metrics(metrics),
  })


def soft_case(arrays, cases, x, mu, scale, E, S, cf=None, num_slots=None,
              keep_tensors=True):
  tag = f'cf{fmt_cf(cf)}' if num_slots is None else f'slots{num_slots}'
  case_id = f'soft-E{E}-{tag}-S{S}'
  router = soft_router.SoftRouter(
      num_experts=E, num_slots=num_slots, capacity_factor=cf,
      deterministic=True, compute_similarity_metrics=True)
  (dispatcher, metrics), state = router.apply(
      {'params': {'mu': mu, 'scale': scale}}, x, mutable=['intermediates'])
  assert isinstance(dispatcher, vmoe.moe.Bfloat16Dispatcher)
  inner = dispatcher.dispatcher
  dispatch = to_np(inner.dispatch_weights)
  combine = to_np(inner.combine_weights)
  slots = dispatch.shape[-1]
  if num_slots is None:
    assert slots == vmoe.moe.compute_capacity(S, E, cf, 'round', 1)
  arrays[f'{case_id}/mu'] = to_np(mu)
  arrays[f'{case_id}/scale'] = np.asarray(scale, np.float32)
  del state  # mu_unit (the normalized mu) is not stored: it is derived.
  if keep_tensors:
    arrays[f'{case_id}/dispatch'] = dispatch.astype(np.float32)
    arrays[f'{case_id}/combine'] = combine.astype(np.float32)
  metrics = flat_metrics(metrics)
  cases.append({
      'id': case_id, 'router': 'SoftRouter', 'num_experts': E,
      'capacity_factor': cf, 'num_slots_arg': num_slots, 'group_size': S,
      'num_slots': int(slots), 'capacity_ceil_or_round': 'round',
      'capacity_multiple_of': 1, 'deterministic': True,
      'scale_applied_to': 'inputs' if x.size < mu.size else 'mu',
      'inputs': f'inputs-S{S}', 'mu': f'{case_id}/mu',
      'scale': f'{case_id}/scale',
      'dispatch': f'{case_id}/dispatch' if keep_tensors else None,
      'combine': f'{case_id}/combine' if keep_tensors else None,
      'metrics': json_metrics(metrics),
  })


def write_routing(out, rng):
  arrays, cases = {}, []
  inputs = {}
  for S in GROUP_SIZES:
    inputs[S] = rng.standard_normal((NUM_GROUPS, S, MODEL_DIM)).astype(
        np.float32)
    arrays[f'inputs-S{S}'] = inputs[S]
  kernels = {}
  for E in EXPERTS:
    kernels[E] = (0.5 * rng.standard_normal((MODEL_DIM, E))).astype(np.float32)
    arrays[f'kernel-E{E}'] = kernels[E]
  for E in EXPERTS:
    for S in GROUP_SIZES:
      x, kernel = jnp.asarray(inputs[S]), jnp.asarray(kernels[E])
      logits = None
      for k in TOP_K:
        for cf in CAPACITY_FACTORS:
          for bp in (False, True):
            case_logits = token_choice_case(
                arrays, cases, x, kernel, E, k, cf, S, bp)
            if logits is None:
              logits = to_np(case_logits)
            assert np.array_equal(logits, to_np(case_logits))
      arrays[f'logits-E{E}-S{S}'] = logits
      arrays[f'gates-E{E}-S{S}'] = to_np(jax.nn.softmax(jnp.asarray(logits)))
      for cf in CAPACITY_FACTORS:
        for policy in (('ceil', 4), ('round', 1)):
          expert_choice_case(arrays, cases, x, kernel, E, cf, S, policy)
  for E in EXPERTS:
    for k in TOP_K:
      for bp in (False, True):
        token_choice_noisy_case(
            arrays, cases, jnp.asarray(inputs[16]), jnp.asarray(kernels[E]),
            E, k, 1.0, 16, bp, seed=1000 * E + 10 * k + int(bp))
  for E in EXPERTS:
    for S in SOFT_GROUP_SIZES:
      for cf in CAPACITY_FACTORS:
        slots = vmoe.moe.compute_capacity(S, E, cf, 'round', 1)
        mu = rng.standard_normal((MODEL_DIM, E, slots)).astype(np.float32)
        scale = np.float32(1.0 + 0.5 * rng.random())
        # Dense (G, S, E, P) tensors are kept for S=16, and for S=33 only at
        # capacity factor 2.0 (round-half-even: 33 * 2 / 4 = 16.5 -> 16);
        # every case keeps num_slots and vmoe's metrics.
        soft_case(arrays, cases, jnp.asarray(inputs[S]), jnp.asarray(mu),
                  jnp.asarray(scale), E, S, cf=cf,
                  keep_tensors=(S == 16 or cf == 2.0))
    mu = rng.standard_normal((MODEL_DIM, E, 1)).astype(np.float32)
    scale = np.float32(1.0 + 0.5 * rng.random())
    soft_case(arrays, cases, jnp.asarray(inputs[16][:1]), jnp.asarray(mu),
              jnp.asarray(scale), E, 16, num_slots=1)
    arrays['inputs-S16-G1'] = inputs[16][:1]
    cases[-1]['inputs'] = 'inputs-S16-G1'
  np.savez_compressed(os.path.join(out, 'routing.npz'), **arrays)
  with open(os.path.join(out, 'routing.json'), 'w') as f:
    f.write('{"num_groups": %d, "model_dim": %d, "cases": [\n' % (
        NUM_GROUPS, MODEL_DIM))
    f.write(',\n'.join(json.dumps(c, separators=(',', ':')) for c in cases))
    f.write('\n]}\n')
  return len(cases)


# ----------------------------------------------------------------------------
# Models.
# ----------------------------------------------------------------------------


def base_config(classifier, representation_size, moe, num_classes=5,
                qk_norm=False, position_emb=None, head_bias_init=0.0):
  encoder = {
      'num_layers': 2, 'mlp_dim': 16, 'num_heads': 2, 'dropout_rate': 0.1,
      'attention_dropout_rate': 0.0, 'moe': moe,
  }
  if qk_norm:
    encoder['attention_qk_norm'] = True
  if position_emb is not None:
    encoder['position_emb'] = position_emb
  return ml_collections.ConfigDict({
      'name': 'VisionTransformerMoe', 'num_classes': num_classes,
      'patch_size': (4, 4), 'hidden_size': 8, 'classifier': classifier,
      'representation_size': representation_size,
      'head_bias_init': head_bias_init, 'encoder': encoder,
  })


def token_router(k, cf, batch_priority=False, bfloat16=False):
  return {
      'num_selected_experts': k, 'noise_std': 1.0,
      'gshard_loss_weight': 0.0, 'importance_loss_weight': 0.005,
      'load_loss_weight': 0.005,
      'dispatcher': {'name': 'einsum', 'bfloat16': bfloat16,
                     'capacity_factor': cf, 'batch_priority': batch_priority,
                     'capacity_ceil_or_round': 'ceil',
                     'capacity_multiple_of': 4},
  }


def expert_choice_router(cf):
  return {
      'name': 'NoisyTopItemsPerExpertRouter', 'noise_std': 1.0,
      'dispatcher': {'name': 'einsum', 'bfloat16': False,
                     'capacity_factor': cf, 'capacity_ceil_or_round': 'round',
                     'capacity_multiple_of': 1},
  }


def with_router(config, router):
  config = ml_collections.ConfigDict(config.to_dict())
  config.encoder.moe.router = router
  return config


def model_specs():
  """name -> (batch size, [(variant, config), ...]); params of variant 0."""
  specs = {}
  # MoE in the first block: with the class token read out after the last
  # block, a MoE there would only show the class tokens' routing.
  moe = {'layers': (0,), 'num_experts': 4, 'group_size': 34,
         'split_rngs': False, 'router': token_router(2, 2.0)}
  base = base_config('token', None, moe)
  specs['vmoe_token'] = (2, [
      ('tc_k2_cf2', base),
      ('tc_k2_cf0.5', with_router(base, token_router(2, 0.5))),
      ('tc_k2_cf0.5_bp', with_router(base, token_router(2, 0.5, True))),
      ('tc_k2_cf0.5_bf16', with_router(base, token_router(2, 0.5, False,
                                                          True))),
      ('ec_cf1', with_router(base, expert_choice_router(1.0))),
  ])
  moe = {'layers': (1,), 'num_experts': 4, 'group_size': 16,
         'split_rngs': False, 'router': token_router(2, 2.0)}
  base = base_config('gap', 6, moe)
  specs['vmoe_gap_repr'] = (2, [
      ('tc_k2_cf2', base),
      ('tc_k2_cf1', with_router(base, token_router(2, 1.0))),
      ('tc_k2_cf1_bp', with_router(base, token_router(2, 1.0, True))),
  ])
  moe = {'layers': (0, 1), 'num_experts': 4, 'group_size': 16,
         'split_rngs': False, 'router': token_router(1, 4.0)}
  base = base_config('map', None, moe)
  specs['vmoe_map'] = (2, [
      ('tc_k1_cf4', base),
      ('tc_k1_cf1', with_router(base, token_router(1, 1.0))),
      ('tc_k1_cf1_bp', with_router(base, token_router(1, 1.0, True))),
  ])
  moe = {'layers': (1,), 'num_experts': 4, 'group_size': 16,
         'split_rngs': False,
         'router': {'name': SOFT_ROUTER_NAME, 'capacity_factor': 1.0,
                    'num_slots': None, 'compute_similarity_metrics': True}}
  base = base_config('gap', None, moe, qk_norm=True,
                     head_bias_init=-math.log(5))
  specs['soft_moe_gap'] = (2, [('soft_cf1', base)])
  moe = {'layers': (1,), 'num_experts': 8, 'group_size': 16,
         'split_rngs': False,
         'router': {'name': SOFT_ROUTER_NAME, 'capacity_factor': None,
                    'num_slots': 1, 'compute_similarity_metrics': True}}
  base = base_config('map', None, moe, qk_norm=True,
                     position_emb={'name': 'sincos2d'})
  specs['soft_moe_map'] = (2, [('soft_slots1', base)])
  # Class token with sincos2d (the class token gets no position embedding)
  # and one Soft MoE group spanning both images (2 x 17 tokens, class tokens
  # included); capacity_factor 0.5: round(34 * 0.5 / 4) = 4 slots per expert.
  moe = {'layers': (0,), 'num_experts': 4, 'group_size': 34,
         'split_rngs': False,
         'router': {'name': SOFT_ROUTER_NAME, 'capacity_factor': 0.5, 'num_slots': None,
                    'compute_similarity_metrics': True}}
  base = base_config('token', None, moe, qk_norm=True,
                     position_emb={'name': 'sincos2d'})
  specs['soft_moe_token'] = (2, [('soft_cf0.5', base)])
  return specs


def build_model(config):
  kwargs = config.to_dict()
  name = kwargs.pop('name')
  assert name == 'VisionTransformerMoe'
  return vmoe_models.VisionTransformerMoe(deterministic=True, **kwargs)


def randomize(params, rng):
  """Perturbs every leaf (zero-initialized ones too) with N(0, 0.1^2)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  out = {}
  for path in sorted(flat):
    value = np.asarray(flat[path], np.float32)
    out[path] = (value + 0.1 * rng.standard_normal(value.shape)).astype(
        np.float32)
  return flax.traverse_util.unflatten_dict(out)


def moe_layer_records(model_vars, intermediates, config, layer):
  """Re-runs the router of one MoE layer on its captured input."""
  moe = config.encoder.moe
  block = f'encoderblock_{layer}'
  ln_out = intermediates['Encoder'][block]['LayerNorm_1']['__call__'][0]
  x = ln_out.reshape(-1, moe.group_size, ln_out.shape[-1])
  router_cfg = dict(moe.router.to_dict())
  router_cls = router_cfg.pop('name', 'NoisyTopExpertsPerItemRouter')
  if '.' in router_cls:
    cls = soft_router.SoftRouter
  else:
    cls = getattr(routing, router_cls)
  router_cfg.setdefault('deterministic', True)
  router = cls(num_experts=moe.num_experts, **router_cfg)
  router_params = model_vars['params']['Encoder'][block]['Moe']['Router']
  if cls is soft_router.SoftRouter:
    dispatcher, _ = router.apply({'params': router_params}, x,
                                 mutable=['intermediates'])[0]
    inner = dispatcher.dispatcher
    return {
        'moe_inputs': to_np(x),
        'dispatch': to_np(inner.dispatch_weights),
        'combine': to_np(inner.combine_weights),
    }, inner.dispatch_weights.shape[-1]
  (dispatcher, _), logits = capture_dense_logits(
      router, router_params, x)
  inner = getattr(dispatcher, 'dispatcher', dispatcher)
  gates = to_np(jax.nn.softmax(logits))
  dispatch = to_np(inner.dispatch_weights)
  combine = to_np(inner.combine_weights)
  capacity = dispatch.shape[-1]
  slot = slots_from_dispatch(dispatch)
  check_compact_encoding(dispatch, combine, gates, slot, capacity)
  return {'moe_inputs': to_np(x), 'gates': gates, 'slot': slot}, capacity


def write_model(out, name, batch, variants, rng, seed, write_msgpack):
  folder = os.path.join(out, 'models', name)
  os.makedirs(folder, exist_ok=True)
  images = rng.standard_normal((batch, 16, 16, 3)).astype(np.float32)
  _, config0 = variants[0]
  model0 = build_model(config0)
  init = model0.init(jax.random.PRNGKey(seed), jnp.asarray(images))
  params = randomize(init['params'], rng)
  params = jax.tree_util.tree_map(jnp.asarray, params)

  # vmoe's sharded checkpoint writer, then read back with vmoe's reader.
  prefix = os.path.join(folder, 'params')
  partitioned.save_checkpoint(prefix, params, num_shards=2,
                              max_chunk_bytes=1024).get()
  restored = partitioned.restore_checkpoint(prefix, None)
  for a, b in zip(jax.tree_util.tree_leaves(restored),
                  jax.tree_util.tree_leaves(params)):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  assert (jax.tree_util.tree_structure(restored) ==
          jax.tree_util.tree_structure(
              jax.tree_util.tree_map(np.asarray, params)))
  if write_msgpack:
    with open(os.path.join(folder, 'params.msgpack'), 'wb') as f:
      f.write(flax.serialization.to_bytes(params))
    with open(os.path.join(folder, 'params.msgpack'), 'rb') as f:
      again = flax.serialization.msgpack_restore(f.read())
    for a, b in zip(jax.tree_util.tree_leaves(again),
                    jax.tree_util.tree_leaves(params)):
      assert np.array_equal(np.asarray(a), np.asarray(b))

  flat = flax.traverse_util.flatten_dict(params, sep='/')
  with open(os.path.join(folder, 'tree.json'), 'w') as f:
    json.dump({k: [list(v.shape), str(v.dtype)] for k, v in
               sorted(flat.items())}, f, indent=1)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump(config0.to_dict(), f, indent=1)
  with open(os.path.join(folder, 'variants.json'), 'w') as f:
    json.dump({v: c.to_dict() for v, c in variants}, f, indent=1)

  arrays = {'images': images}
  summary = {}
  for variant, config in variants:
    model = build_model(config)
    model_vars = {'params': params}
    (logits, metrics), state = model.apply(
        model_vars, jnp.asarray(images), capture_intermediates=True,
        mutable=['intermediates'])
    arrays[f'{variant}/logits'] = to_np(logits)
    for key, value in flat_metrics(metrics).items():
      arrays[f'{variant}/metric/{key}'] = value
    pre_logits = state['intermediates']['pre_logits']['__call__'][0]
    arrays[f'{variant}/pre_logits'] = to_np(pre_logits)
    info = {'logits_shape': list(logits.shape), 'moe_layers': {}}
    for layer in config.encoder.moe.layers:
      records, capacity = moe_layer_records(
          model_vars, state['intermediates'], config, layer)
      for key, value in records.items():
        arrays[f'{variant}/encoderblock_{layer}/{key}'] = value
      layer_info = {'capacity_or_slots': int(capacity)}
      if 'slot' in records:
        k = config.encoder.moe.router.get('num_selected_experts', None)
        per_item = (records['slot'] >= 0).sum(-1)
        layer_info['items_with_fewer_than_k_experts'] = (
            int((per_item < k).sum()) if k else None)
        layer_info['assignments'] = int((records['slot'] >= 0).sum())
      info['moe_layers'][f'encoderblock_{layer}'] = layer_info
    summary[variant] = info
  np.savez_compressed(os.path.join(folder, 'io.npz'), **arrays)
  return summary


def list_files(out):
  return sorted(
      os.path.relpath(os.path.join(d, f), out)
      for d, _, fs in os.walk(out) for f in fs)


def main():
  out = os.path.abspath(ARGS.out)
  specs = model_specs()
  only = None if ARGS.only is None else ARGS.only.split(',')
  if only is not None:
    unknown = sorted(set(only) - set(OWN_RNG_MODELS))
    if unknown:
      raise SystemExit(f'--only takes models of OWN_RNG_MODELS {OWN_RNG_MODELS}; '
                       f'received {unknown}')
    with open(os.path.join(out, 'manifest.json')) as f:
      manifest = json.load(f)
    for i, (name, (batch, variants)) in enumerate(specs.items()):
      if name in only:
        manifest['models'][name] = write_model(
            out, name, batch, variants,
            np.random.default_rng([ARGS.seed, i]), seed=ARGS.seed + i,
            write_msgpack=name in MSGPACK_MODELS)
    manifest['files'] = [
        f for f in list_files(out) if f != 'manifest.json'] + ['manifest.json']
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
      json.dump(manifest, f, indent=1)
    print(json.dumps({n: manifest['models'][n] for n in only}, indent=1))
    return
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  rng = np.random.default_rng(ARGS.seed)
  num_cases = write_routing(out, rng)
  models = {}
  for i, (name, (batch, variants)) in enumerate(specs.items()):
    model_rng = (np.random.default_rng([ARGS.seed, i])
                 if name in OWN_RNG_MODELS else rng)
    models[name] = write_model(out, name, batch, variants, model_rng,
                               seed=ARGS.seed + i,
                               write_msgpack=name in MSGPACK_MODELS)
  files = list_files(out)
  manifest = {
      'generator': 'tools/make_vmoe_fixtures.py',
      'vmoe_commit': ARGS.vmoe_commit,
      'vision_transformer_commit': ARGS.vit_commit,
      'versions': {'jax': jax.__version__, 'flax': flax.__version__,
                   'numpy': np.__version__,
                   'ml_collections': getattr(ml_collections, '__version__',
                                             'unknown'),
                   'python': sys.version.split()[0]},
      'seed': ARGS.seed, 'routing_cases': num_cases, 'models': models,
      'files': files + ['manifest.json'],
  }
  with open(os.path.join(out, 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=1)
  print(json.dumps(models, indent=1))
  print(f'{num_cases} routing cases; wrote {len(files) + 1} files to {out}')


if __name__ == '__main__':
  main()
