"""keras-hub's preprocessing harness (`run_preprocessing_layer_test`,
`run_preprocessor_test`) on the tokenizer, image converters and
preprocessors: direct calls, unbatched and batched `tf.data` pipelines and
Grain pipelines all give the same values, and configs round-trip."""

import numpy as np
from keras_hub.src.tests.test_case import TestCase

from keras_sparse_moe.models import MoEViTImageClassifierPreprocessor
from keras_sparse_moe.models import MoEViTImageConverter
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderImageConverter
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderPreprocessor
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderTokenizer
from tests import configs

RAW = configs.images(2, (16, 16, 1)) * 16.0
# 2x2 average pooling of RAW, then / 16: what bilinear halving gives.
HALVED = RAW.reshape(2, 8, 2, 8, 2, 1).mean(axis=(2, 4)) / 16.0
LABELS = np.array([3, 7])


class ImageConverterTest(TestCase):
    def test_moe_vit_image_converter(self):
        self.run_preprocessing_layer_test(
            cls=MoEViTImageConverter,
            init_kwargs={"image_size": (8, 8), "scale": 1 / 16},
            input_data=RAW,
            expected_output=HALVED.tolist(),  # a list: the harness tests its truth
        )

    def test_moe_dual_encoder_image_converter(self):
        self.run_preprocessing_layer_test(
            cls=MoEDualEncoderImageConverter,
            init_kwargs={"image_size": (16, 16), "scale": 1 / 8, "offset": -1.0},
            input_data=RAW,
            expected_output=(RAW / 8 - 1).tolist(),
        )


class MoEViTImageClassifierPreprocessorTest(TestCase):
    def test_preprocessor_basics(self):
        self.run_preprocessing_layer_test(
            cls=MoEViTImageClassifierPreprocessor,
            init_kwargs={"image_converter": MoEViTImageConverter(image_size=(8, 8), scale=1 / 16)},
            input_data=(RAW, LABELS),
            expected_output=(HALVED, LABELS),
        )


class MoEDualEncoderTokenizerTest(TestCase):
    def test_tokenizer_basics(self):
        tokenizer = MoEDualEncoderTokenizer()
        captions = ["a photo of the digit seven .", "the number three"]
        expected = [[tokenizer.token_to_id(word) for word in text.split()] for text in captions]
        self.assertNotIn(tokenizer.token_to_id("[UNK]"), sum(expected, []))
        self.run_preprocessing_layer_test(
            cls=MoEDualEncoderTokenizer,
            init_kwargs={},
            input_data=captions,
            expected_output=expected,
        )


class MoEDualEncoderPreprocessorTest(TestCase):
    def test_captions(self):
        tokenizer = MoEDualEncoderTokenizer()
        start, end, pad = (tokenizer.start_token_id, tokenizer.end_token_id,
                           tokenizer.pad_token_id)
        two, three = tokenizer.token_to_id("two"), tokenizer.token_to_id("three")
        self.run_preprocessing_layer_test(
            cls=MoEDualEncoderPreprocessor,
            init_kwargs={"sequence_length": 5},
            input_data={"prompts": ["two", "three two two two"]},
            expected_output={
                "token_ids": [[start, two, end, pad, pad], [start, three, two, two, end]],
                "padding_mask": [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
            },
        )

    def test_sequence_length_set_after_the_first_call_takes_effect(self):
        preprocessor = MoEDualEncoderPreprocessor(sequence_length=5)
        tokenizer = preprocessor.tokenizer
        first = preprocessor({"prompts": ["two"]})
        self.assertEqual(tuple(first["token_ids"].shape), (1, 5))
        preprocessor.sequence_length = 3
        second = preprocessor({"prompts": ["two three"]})
        self.assertAllEqual(second["token_ids"], [[tokenizer.start_token_id,
                                                   tokenizer.token_to_id("two"),
                                                   tokenizer.end_token_id]])
        self.assertEqual(preprocessor.get_config()["sequence_length"], 3)
        with self.assertRaisesRegex(ValueError, "sequence_length"):
            preprocessor.sequence_length = 2  # start + end + at least one token
