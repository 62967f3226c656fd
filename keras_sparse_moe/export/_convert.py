"""Child process of `export_litert` and `export_dual_encoder` on JAX/PyTorch:
load a `.keras` file on the TensorFlow backend (safe mode) and convert it to
LiteRT (started by `handover.convert_in_child`).

Usage: KERAS_BACKEND=tensorflow python -m keras_sparse_moe.export._convert \
    [--towers] --model M.keras --output OUT.tflite|DIR [--quantization Q]
    [--representative R.npz] [--text-representative T.npz] [--batch-size N|none]
    [--no-preprocessing | --input-image-shape H,W,C --input-dtype D] [--import MODULE ...]

Errors are reported to the parent through `handover.report_error`.
"""

import argparse
import importlib
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--quantize-routers", action="store_true")
    parser.add_argument("--representative", default=None)
    parser.add_argument("--batch-size", default="1", help="an int, or 'none' (dynamic)")
    parser.add_argument("--no-preprocessing", action="store_true")
    parser.add_argument("--input-image-shape", default=None)
    parser.add_argument("--input-dtype", default="uint8")
    parser.add_argument("--input-shape", default=None)
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        help="module defining custom layers (imported to register them)")
    parser.add_argument("--towers", action="store_true",
                        help="export the two towers of a dual encoder into --output (a directory)")
    parser.add_argument("--text-representative", default=None)
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != "tensorflow":
        sys.exit("keras_sparse_moe.export._convert must run with KERAS_BACKEND=tensorflow")

    import keras
    import keras_sparse_moe  # noqa: F401  (registers the custom objects)
    from keras_sparse_moe.export import handover
    from keras_sparse_moe.export.litert import export_litert

    try:
        for name in args.imports:
            try:
                importlib.import_module(name)
            except Exception as error:
                raise ValueError(
                    f"The TensorFlow-backend export process could not import {name!r}, the "
                    f"module of custom layers of the model: {type(error).__name__}: {error}"
                ) from None
        images = handover.load_arrays(args.representative) if args.representative else None
        try:
            model = keras.saving.load_model(args.model, safe_mode=True, compile=False)
        except Exception as error:
            raise handover.load_error(error) from None
        batch_size = None if args.batch_size == "none" else int(args.batch_size)
        image_shape = (tuple(int(d) for d in args.input_image_shape.split(","))
                       if args.input_image_shape else None)
        if args.towers:
            from keras_sparse_moe.export.towers import export_towers_in_child

            text = (handover.load_arrays(args.text_representative)
                    if args.text_representative else None)
            export_towers_in_child(
                model, args.output, args.quantization, images, text, batch_size,
                args.quantize_routers, include_preprocessing=not args.no_preprocessing,
                input_image_shape=image_shape, input_dtype=args.input_dtype)
            return
        shape = (
            tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
        )
        export_litert(
            model,
            args.output,
            quantization=args.quantization,
            representative_data=images,
            batch_size=batch_size,
            input_shape=shape,
            quantize_routers=args.quantize_routers,
            include_preprocessing=not args.no_preprocessing,
            input_image_shape=image_shape,
            input_dtype=args.input_dtype,
        )
    except ValueError as error:
        handover.report_error(error)


if __name__ == "__main__":
    main()
