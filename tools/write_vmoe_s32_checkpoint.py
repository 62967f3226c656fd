# Copyright 2026 The keras-sparse-moe Authors.
"""Write a random V-MoE S/32 checkpoint with google-research/vmoe's own code.

The published S/32 checkpoint (vmoe_s32_last2_ilsvrc2012_randaug_light1,
56M parameters) has exactly this tree: vmoe's model from the paper config,
its parameters drawn at random, saved with vmoe's sharded checkpoint writer
(`vmoe.checkpoints.partitioned`), plus the model config as `config.json`.
`benchmarks/convert_vmoe.py` converts it to measure the converter's time and
memory without downloading anything. Run it in vmoe's environment (see
tools/README.md):

    /tmp/venv-vmoe/bin/python tools/write_vmoe_s32_checkpoint.py \
        --vmoe-src /tmp/vmoe-src --vit-src /tmp/vit-src --output /tmp/vmoe_s32

With `--msgpack PATH` the same parameters are also written as one flax
msgpack file (`flax.serialization.to_bytes`), the converter's other input
format.
"""

import argparse
import json
import os
import sys


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vmoe-src', required=True)
  parser.add_argument('--vit-src', required=True)
  parser.add_argument('--output', required=True, help='directory to write')
  parser.add_argument('--shards', type=int, default=4)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--msgpack', help='also write the params as this flax msgpack file')
  args = parser.parse_args()
  sys.path[:0] = [args.vmoe_src, args.vit_src]
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

  # pylint: disable=g-import-not-at-top
  import flax
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vmoe.checkpoints import partitioned
  from vmoe.configs.vmoe_paper import vmoe_s32_last2_ilsvrc2012_randaug_light1 as paper
  from vmoe.nn import models as vmoe_models
  # pylint: enable=g-import-not-at-top

  config = paper.get_config().model.to_dict()
  kwargs = dict(config)
  assert kwargs.pop('name') == 'VisionTransformerMoe'
  model = vmoe_models.VisionTransformerMoe(deterministic=True, **kwargs)
  images = jnp.zeros((8, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), images))['params']
  rng = np.random.default_rng(args.seed)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
  params = flax.traverse_util.unflatten_dict({
      path: (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32)
      for path, leaf in flat.items()})
  params = jax.tree_util.tree_map(jnp.asarray, params)
  os.makedirs(args.output, exist_ok=True)
  prefix = os.path.join(args.output, 'vmoe_s32_last2_ilsvrc2012_randaug_light1')
  partitioned.save_checkpoint(prefix, params, num_shards=args.shards).get()
  with open(os.path.join(args.output, 'config.json'), 'w') as f:
    json.dump(config, f, indent=1, default=list)
  if args.msgpack:
    with open(args.msgpack, 'wb') as f:
      f.write(flax.serialization.to_bytes(params))
  count = sum(v.size for v in flat.values())
  print(f'{prefix}: {count:,} parameters in {len(flat)} arrays')


if __name__ == '__main__':
  main()
