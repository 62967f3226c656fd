"""Recipe: a V-MoE vision transformer classifier (`moe_vit_tiny` on the
embedded digits by default), trained with the digits recipe
(`keras_sparse_moe.recipes.classifier.DIGITS_RECIPE`: AdamW with warmup +
cosine decay, label smoothing, weight decay, gradient clipping, random
rotation / zoom / shift), evaluated on the fixed test split.

This recipe trained the shipped `moe_vit_tiny_digits` preset (from the
shipped synthetic-digits pretraining, together with UCI's optdigits-train):

    python recipes/moe_vit.py --preset moe_vit_tiny_synthetic_digits --extra-train-data optdigits-train \
        --epochs 30 --learning-rate 5e-4 --validation-fraction 0 --output runs/digits_final \
        --save-preset keras_sparse_moe/presets_data/moe_vit_tiny_digits

MoE versus dense comparison (see docs/results.md):

    python recipes/moe_vit.py --seeds 0 1 2 --output runs/moe_vit
    python recipes/dense_vit.py --seeds 0 1 2 --output runs/dense_vit --compare runs/moe_vit/summary.json

Backend: `KERAS_BACKEND=tensorflow|jax|torch` (default tensorflow). Re-running
a command resumes interrupted runs; `python recipes/moe_vit.py --help` lists
the options.
"""

import sys

from keras_sparse_moe.recipes.vit_recipes import main

if __name__ == "__main__":
    sys.exit(main(dense=False))
