"""Pretrain a MoE-ViT on synthetic digits: how `moe_vit_tiny_synthetic_digits`
was made.

Draws 50,000 synthetic handwritten digits in the embedded digits' format
(`synthetic_digits.py`: pen strokes and fonts, NIST-like normalisation to
8x8 counts 0..16; validation and test splits with their own seeds), wraps
them in tf.data pipelines and trains `moe_vit_tiny` on them with
`keras_sparse_moe.train` for 10 epochs of the digits recipe:

    python examples/digits/pretrain_synthetic.py --output runs/synthetic \\
        --save-preset runs/synthetic_preset

Drawing the images takes a few minutes; training about an hour on 2 CPU
cores. Re-running resumes an interrupted run. `--train-count 2000 --epochs 1`
is a quick check.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def synthetic_datasets(model, batch_size, train_count, seed=0):
    """`Datasets` of synthetic digits at `model`'s input size (raw 0..16
    values: the model's preprocessor rescales)."""
    import keras_sparse_moe as ksm
    from keras_sparse_moe.data import DIGITS_CLASS_NAMES
    from keras_sparse_moe.data import DIGITS_MAX_VALUE
    from keras_sparse_moe.data.sources import Datasets
    from synthetic_digits import load_synthetic_digits
    from synthetic_digits import synthetic_digits_counts

    height, width, channels = model.backbone.image_shape
    counts = synthetic_digits_counts(train_count)
    pipelines = {}
    for split in counts:
        images, labels = load_synthetic_digits(split, train_count)
        pipelines[split] = ksm.make_pipeline(
            images, labels, image_size=(height, width), channels=channels, batch_size=batch_size,
            training=split == "train", augment=False, rescale=False, max_value=DIGITS_MAX_VALUE,
            seed=seed, cache=True,
        )
    info = ksm.DatasetInfo(
        spec=f"synthetic-digits:{train_count}", source="synthetic-digits", num_classes=10,
        class_names=DIGITS_CLASS_NAMES, counts=counts, image_shape=(8, 8, 1),
        max_value=DIGITS_MAX_VALUE,
    )
    return Datasets(pipelines["train"], pipelines["validation"], pipelines["test"], info)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="moe_vit_tiny")
    parser.add_argument("--train-count", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/synthetic")
    parser.add_argument("--save-preset", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import keras_sparse_moe as ksm
    from keras_sparse_moe.recipes.classifier import load_classifier

    config = ksm.TrainingConfig.digits(epochs=args.epochs, seed=args.seed)
    data = synthetic_datasets(load_classifier(args.preset), config.batch_size, args.train_count,
                              args.seed)
    metrics, model = ksm.train(args.preset, data, config, args.output, return_model=True)
    print(f"synthetic test accuracy {metrics['accuracy']:.4f}")
    real = ksm.recipes.classifier.evaluate_classifier(model, "digits", routing_examples=0)
    print(f"accuracy on the real digits' test split {real['accuracy']:.4f}")
    if args.save_preset:
        print(f"saved preset directory {ksm.save_to_preset(model, args.save_preset)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
