"""Recipe: the dense ViT baseline of a MoE-ViT preset, with the same active
FLOPs per token (`keras_sparse_moe.recipes.comparison.dense_equivalent_overrides`:
no MoE layer, every MLP as wide as the mean hidden width a token uses in the
MoE model, e.g. 192 for `moe_vit_tiny`'s 128-wide MLPs and top-2 of 8
128-wide experts in every other block), trained with the same recipe and
budget as `recipes/moe_vit.py`.

    python recipes/dense_vit.py --seeds 0 1 2 --output runs/dense_vit --compare runs/moe_vit/summary.json

Backend: `KERAS_BACKEND=tensorflow|jax|torch` (default tensorflow).
"""

import sys

from keras_sparse_moe.recipes.vit_recipes import main

if __name__ == "__main__":
    sys.exit(main(dense=True))
