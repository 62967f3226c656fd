"""Re-derives tests/fixtures/vmoe from tools/README.md's description alone.

A check that the written spec is complete: using only NumPy (float64),
msgpack and ml_dtypes (for bfloat16 rounding), no vmoe, flax or jax, it

- reads every model's params from vmoe's sharded checkpoint (.index + .data
  shards) and from params.msgpack where present, and checks they agree with
  each other and with tree.json;
- recomputes the capacity, the token-choice / expert-choice buffer slots and
  the Soft MoE dispatch/combine weights of every routing case, and the
  importance / gshard / load losses of the token-choice cases;
- runs a forward pass of every model variant and compares it with vmoe's
  logits.

Run from the repository root, in any env with numpy, msgpack and ml_dtypes
(e.g. the reference venv of tools/README.md):

  /tmp/venv-vmoe/bin/python tools/check_vmoe_fixture.py

It prints the largest deviations and exits non-zero on a mismatch.
"""

import glob
import json
import math
import os
import sys

import ml_dtypes
import msgpack
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'tests', 'fixtures', 'vmoe')


# ----------------------------------------------------------------------------
# Checkpoint readers.
# ----------------------------------------------------------------------------


def _unpack_ndarray(data):
  shape, dtype, buf = msgpack.unpackb(data, raw=True)
  return np.frombuffer(buf, dtype=np.dtype(dtype.decode())).reshape(shape)


def _unpack_slice_nd(data):
  return [tuple(msgpack.unpackb(s, raw=True))
          for s in msgpack.unpackb(data, raw=True)]


def _ext_hook(code, data):
  if code == 1:  # ndarray
    return _unpack_ndarray(data)
  if code == 6:  # SliceNd
    return _unpack_slice_nd(data)
  if code == 8:  # IndexInfo
    global_shape, slices, shards = msgpack.unpackb(data, raw=True)
    shape, dtype, _, _ = msgpack.unpackb(global_shape, raw=True)
    return {'shape': tuple(shape), 'dtype': dtype.decode(),
            'slices': [_unpack_slice_nd(s) for s in slices],
            'shards': list(shards)}
  raise ValueError(f'unexpected msgpack ExtType {code}')


def _load(path):
  with open(path, 'rb') as f:
    return msgpack.unpackb(f.read(), ext_hook=_ext_hook, raw=False,
                           strict_map_key=False)


def _leaves(tree, prefix=''):
  for key in sorted(tree):
    value = tree[key]
    if isinstance(value, dict) and 'shape' not in value:
      yield from _leaves(value, prefix + key + '/')
    else:
      yield prefix + key, value


def read_sharded(prefix):
  """Returns {path: array} from a vmoe sharded checkpoint."""
  index = _load(prefix + '.index')
  assert index['version'] == '20220622', index['version']
  infos = list(_leaves(index['index']))
  out = {p: np.zeros(i['shape'], np.dtype(i['dtype'])) for p, i in infos}
  filled = dict.fromkeys(out, 0)
  shards = sorted(glob.glob(prefix + '.data-*'))
  assert len(shards) == index['shard_count'], shards
  for shard in shards:
    data = _load(shard)
    assert data.pop('__msgpack_array_chunk_a87ca2__') is True
    for leaf_index, chunks in data.items():
      path = infos[int(leaf_index)][0]
      for subchunks, global_slice in chunks:
        chunk = np.concatenate(subchunks)
        shape = tuple(stop - start for start, stop, _ in global_slice)
        where = tuple(slice(start, stop) for start, stop, _ in global_slice)
        out[path][where] = chunk.reshape(shape)
        filled[path] += chunk.size
  assert all(filled[p] == out[p].size for p in out), 'incomplete arrays'
  return out


def read_flax_msgpack(path):
  return dict(_leaves(_load(path)))


# ----------------------------------------------------------------------------
# Routing, as described in tools/README.md.
# ----------------------------------------------------------------------------


def capacity(num_tokens, num_experts, capacity_factor, ceil_or_round,
             multiple_of):
  c = num_tokens * capacity_factor / num_experts
  c = int(math.ceil(c)) if ceil_or_round == 'ceil' else int(round(c))
  if c < 1:
    raise ValueError(c)
  if multiple_of and multiple_of > 0:
    c += (-c) % multiple_of
  return c


def token_choice_slots(gates, k, cap, batch_priority):
  """gates (S, E) -> slot (S, E), -1 where not dispatched."""
  num_items, num_experts = gates.shape
  choices = np.argsort(-gates, axis=1, kind='stable')[:, :k]
  order = (np.argsort(-gates.max(axis=1), kind='stable') if batch_priority
           else np.arange(num_items))
  slot = -np.ones((num_items, num_experts), np.int64)
  count = np.zeros(num_experts, np.int64)
  for j in range(k):
    for s in order:
      e = choices[s, j]
      if count[e] < cap:
        slot[s, e] = count[e]
      count[e] += 1
  return slot


def expert_choice_slots(gates, cap):
  num_items, num_experts = gates.shape
  slot = -np.ones((num_items, num_experts), np.int64)
  for e in range(num_experts):
    top = np.argsort(-gates[:, e], kind='stable')[:cap]
    slot[top, e] = np.arange(cap)
  return slot


def softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


def importance_loss(gates):
  imp = gates.sum(0)
  return (imp.std() / imp.mean())**2


def gshard_loss(gates):
  num_experts = gates.shape[1]
  top1 = np.eye(num_experts)[gates.argmax(1)].mean(0)
  return (top1 * gates.mean(0)).mean() * num_experts**2


def load_loss(logits, noisy_logits, k, noise_std):
  threshold = -np.sort(-noisy_logits, axis=1)[:, k - 1]
  z = (threshold[:, None] - logits) / noise_std
  p = 1.0 - 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
  p_mean = p.mean(0)
  return (p_mean.std() / p_mean.mean())**2


def soft_weights(x, mu, scale):
  xn = x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)
  mun = mu / np.sqrt((mu**2).sum(0, keepdims=True) + 1e-6)
  logits = np.einsum('gmd,dnp->gmnp', xn, mun) * scale
  g, m = logits.shape[:2]
  dispatch = softmax(logits, 1)
  combine = softmax(logits.reshape(g, m, -1), 2).reshape(logits.shape)
  return dispatch, combine


def check_routing(root):
  arrays = np.load(os.path.join(root, 'routing.npz'))
  with open(os.path.join(root, 'routing.json')) as f:
    cases = json.load(f)['cases']
  worst_loss, worst_soft = 0.0, 0.0

  def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-3)

  for case in cases:
    num_items, num_experts = case['group_size'], case['num_experts']
    if case['router'] == 'NoisyTopExpertsPerItemRouter':
      k = case['num_selected_experts']
      cap = capacity(num_items * k, num_experts, case['capacity_factor'],
                     'ceil', 4)
      assert cap == case['capacity'], case['id']
      gates = arrays[case['gates']].astype(np.float64)
      clean = arrays[f'gates-E{num_experts}-S{num_items}'].astype(np.float64)
      for g in range(gates.shape[0]):
        slot = token_choice_slots(gates[g], k, cap, case['batch_priority'])
        assert np.array_equal(slot, arrays[case['slot']][g]), case['id']
        metrics = case['metrics']
        worst_loss = max(
            worst_loss,
            rel(importance_loss(clean[g]), metrics['importance_loss'][g]),
            rel(gshard_loss(gates[g]), metrics['gshard_loss'][g]))
        if not case['deterministic']:
          loss = load_loss(arrays[case['logits']][g].astype(np.float64),
                           arrays[case['noisy_logits']][g].astype(np.float64),
                           k, case['effective_noise_std'])
          worst_loss = max(worst_loss, rel(loss, metrics['load_loss'][g]))
    elif case['router'] == 'NoisyTopItemsPerExpertRouter':
      cap = capacity(num_items, num_experts, case['capacity_factor'],
                     case['capacity_ceil_or_round'],
                     case['capacity_multiple_of'])
      assert cap == case['capacity'], case['id']
      gates = arrays[case['gates']].astype(np.float64)
      for g in range(gates.shape[0]):
        slot = expert_choice_slots(gates[g], cap)
        assert np.array_equal(slot, arrays[case['slot']][g]), case['id']
    else:
      if case['num_slots_arg'] is None:
        assert case['num_slots'] == capacity(
            num_items, num_experts, case['capacity_factor'], 'round', 1)
      if case['dispatch'] is None:
        continue
      dispatch, combine = soft_weights(
          arrays[case['inputs']].astype(np.float64),
          arrays[case['mu']].astype(np.float64), float(arrays[case['scale']]))
      worst_soft = max(worst_soft,
                       np.abs(dispatch - arrays[case['dispatch']]).max(),
                       np.abs(combine - arrays[case['combine']]).max())
  print(f'routing: {len(cases)} cases, slots and capacities identical; '
        f'max relative aux-loss deviation {worst_loss:.1e}, '
        f'max Soft MoE weight deviation {worst_soft:.1e}')
  assert worst_loss < 1e-4 and worst_soft < 1e-5


# ----------------------------------------------------------------------------
# Models, as described in tools/README.md.
# ----------------------------------------------------------------------------


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  y = (x - mean) / np.sqrt(var + eps) * p['scale']
  return y + p['bias'] if 'bias' in p else y


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def dense(x, p):
  return x @ p['kernel'] + p['bias']


def mlp(x, p):
  return dense(gelu_tanh(dense(x, p['Dense_0'])), p['Dense_1'])


def attention(q_in, kv_in, p):
  def proj(x, name):
    return np.einsum('btd,dhk->bthk', x, p[name]['kernel']) + p[name]['bias']
  q, k, v = proj(q_in, 'query'), proj(kv_in, 'key'), proj(kv_in, 'value')
  if 'query_ln' in p:
    q, k = layer_norm(q, p['query_ln']), layer_norm(k, p['key_ln'])
  q = q / np.sqrt(q.shape[-1])
  weights = softmax(np.einsum('bqhk,bshk->bhqs', q, k), -1)
  out = np.einsum('bhqs,bshk->bqhk', weights, v)
  return np.einsum('bqhk,hkd->bqd', out, p['out']['kernel']) + p['out']['bias']


def bf16(x):
  return x.astype(ml_dtypes.bfloat16).astype(np.float64)


def moe_block(x, p, moe):
  router = dict(moe['router'])
  num_experts, group_size = moe['num_experts'], moe['group_size']
  batch, tokens, dim = x.shape
  xg = x.reshape(-1, group_size, dim)
  experts = p['Mlp']

  def run_experts(inputs):  # (G, E, C, D)
    h = np.einsum('gecd,edm->gecm', inputs, experts['Dense_0']['kernel'])
    h = gelu_tanh(h + experts['Dense_0']['bias'][None, :, None])
    y = np.einsum('gecm,emd->gecd', h, experts['Dense_1']['kernel'])
    return y + experts['Dense_1']['bias'][None, :, None]

  name = router.get('name', 'NoisyTopExpertsPerItemRouter')
  if name.endswith('SoftRouter'):
    dispatch, combine = soft_weights(xg, p['Router']['mu'],
                                     float(p['Router']['scale']))
    expert_in = np.einsum('gsec,gsd->gecd', dispatch, bf16(xg))
    out = np.einsum('gsec,gecd->gsd', combine, bf16(run_experts(expert_in)))
    return out.reshape(batch, tokens, dim)
  dispatcher = router['dispatcher']
  gates = softmax(xg @ p['Router']['dense']['kernel'], -1)
  policy = (dispatcher.get('capacity_ceil_or_round', 'ceil'),
            dispatcher.get('capacity_multiple_of', 4))
  if name == 'NoisyTopItemsPerExpertRouter':
    cap = capacity(group_size, num_experts, dispatcher['capacity_factor'],
                   *policy)
    slots = np.stack([expert_choice_slots(g, cap) for g in gates])
  else:
    k = router.get('num_selected_experts', 1)
    cap = capacity(group_size * k, num_experts,
                   dispatcher['capacity_factor'], *policy)
    slots = np.stack([token_choice_slots(g, k, cap,
                                         dispatcher['batch_priority'])
                      for g in gates])
  dispatch = (slots[..., None] == np.arange(cap)).astype(np.float64)
  combine = dispatch * gates[..., None]
  use_bf16 = dispatcher.get('bfloat16', False)
  expert_in = np.einsum('gsec,gsd->gecd', dispatch,
                        bf16(xg) if use_bf16 else xg)
  expert_out = run_experts(expert_in)
  if use_bf16:
    expert_out = bf16(expert_out)
  out = np.einsum('gsec,gecd->gsd', combine, expert_out)
  return out.reshape(batch, tokens, dim)


def forward(params, config, images):
  ph, pw = config['patch_size']
  batch, height, width, channels = images.shape
  h, w = height // ph, width // pw
  patches = images.reshape(batch, h, ph, w, pw, channels).transpose(
      0, 1, 3, 2, 4, 5).reshape(batch, h * w, ph * pw * channels)
  kernel = params['embedding']['kernel']
  x = patches @ kernel.reshape(-1, kernel.shape[-1]) + params['embedding'][
      'bias']
  if config['classifier'] == 'token':
    x = np.concatenate([np.tile(params['cls'], (batch, 1, 1)), x], 1)
  encoder = config['encoder']
  position_emb = encoder.get('position_emb') or {}
  if position_emb.get('name', 'learned') == 'learned':
    x = x + params['Encoder']['posembed_input']['pos_embedding']
  elif position_emb['name'] == 'sincos2d':
    c = x.shape[-1]
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    yy, xx = yy.ravel(), xx.ravel()
    omega = 1.0 / (position_emb.get('temperature', 10000.0)**(
        np.arange(c // 4) / (c // 4 - 1)))
    emb = np.concatenate([np.sin(np.outer(xx, omega)),
                          np.cos(np.outer(xx, omega)),
                          np.sin(np.outer(yy, omega)),
                          np.cos(np.outer(yy, omega))], -1)
    if x.shape[1] == h * w:
      x = x + emb
    else:
      x = np.concatenate([x[:, :1], x[:, 1:] + emb], 1)
  for i in range(encoder['num_layers']):
    block = params['Encoder'][f'encoderblock_{i}']
    y = layer_norm(x, block['LayerNorm_0'])
    x = x + attention(y, y, block['SelfAttention'])
    y = layer_norm(x, block['LayerNorm_1'])
    if i in encoder['moe']['layers']:
      x = x + moe_block(y, block['Moe'], encoder['moe'])
    else:
      x = x + mlp(y, block['Mlp'])
  x = layer_norm(x, params['Encoder']['encoder_norm'])
  if config['classifier'] in ('token', '0'):
    x = x[:, 0]
  elif config['classifier'] == 'gap':
    x = x.mean(1)
  else:
    head = params['MapHead']
    a = attention(np.tile(head['probe'], (batch, 1, 1)), x,
                  head['MultiHeadDotProductAttention'])
    x = (a + mlp(layer_norm(a, head['LayerNorm']), head['Mlp']))[:, 0]
  if config.get('representation_size'):
    x = np.tanh(dense(x, params['pre_logits']))
  return dense(x, params['head'])


def _nest(flat):
  out = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = np.asarray(value, np.float64)
  return out


def check_models(root):
  worst = 0.0
  for name in sorted(os.listdir(os.path.join(root, 'models'))):
    folder = os.path.join(root, 'models', name)
    flat = read_sharded(os.path.join(folder, 'params'))
    with open(os.path.join(folder, 'tree.json')) as f:
      tree = json.load(f)
    assert sorted(tree) == sorted(flat), name
    assert all(list(flat[k].shape) == tree[k][0] for k in tree), name
    if os.path.exists(os.path.join(folder, 'params.msgpack')):
      other = read_flax_msgpack(os.path.join(folder, 'params.msgpack'))
      assert sorted(other) == sorted(flat), name
      assert all(np.array_equal(other[k], flat[k]) for k in flat), name
    params = _nest(flat)
    io = np.load(os.path.join(folder, 'io.npz'))
    with open(os.path.join(folder, 'variants.json')) as f:
      variants = json.load(f)
    for variant, config in variants.items():
      logits = forward(params, config, io['images'].astype(np.float64))
      err = np.abs(logits - io[f'{variant}/logits']).max()
      print(f'{name}/{variant}: max |logits - vmoe| = {err:.1e}')
      worst = max(worst, err)
  assert worst < 1e-5, worst


def main():
  root = sys.argv[1] if len(sys.argv) > 1 else ROOT
  check_routing(root)
  check_models(root)
  print('ok')


if __name__ == '__main__':
  main()
