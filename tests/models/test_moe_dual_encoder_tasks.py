"""Tokenizer, preprocessor, contrastive and zero-shot tasks, presets."""

import os
import warnings

import keras
import numpy as np
import pytest

from keras_sparse_moe import presets
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderContrastive
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderImageConverter
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderPreprocessor
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderTokenizer
from keras_sparse_moe.models.moe_dual_encoder import MoEDualEncoderZeroShotClassifier
from keras_sparse_moe.data.prompts import DIGIT_WORDS

NUM_CLASSES = 4


def test_shipped_vocabulary_and_tokenizer():
    tokenizer = MoEDualEncoderTokenizer()
    assert tokenizer.pad_token_id == 0 and tokenizer.vocabulary_size() < 500
    unk = tokenizer.token_to_id("[UNK]")
    for text in ("A photo of the digit SEVEN.", "zebra"):
        assert unk not in keras.ops.convert_to_numpy(tokenizer(text)).tolist()
    assert len(tokenizer("zebra")) == 5  # spelled: z ##e ##b ##r ##a
    assert tokenizer.detokenize(tokenizer("zebra")) == "zebra"


def test_preprocessor_packs_truncates_and_resizes():
    preprocessor = MoEDualEncoderPreprocessor(
        image_converter=MoEDualEncoderImageConverter(image_size=(8, 8), scale=1 / 16),
        sequence_length=6,
    )
    long_caption = "a blurry photo of the handwritten digit seven on a page"
    out = preprocessor({"images": np.full((2, 16, 16, 1), 16.0), "prompts": [long_caption, "one"]})
    ids = keras.ops.convert_to_numpy(out["token_ids"])
    mask = keras.ops.convert_to_numpy(out["padding_mask"])
    tokenizer = preprocessor.tokenizer
    assert ids.shape == (2, 6) and mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert ids[0, 0] == tokenizer.start_token_id and ids[0, -1] == tokenizer.end_token_id
    images = keras.ops.convert_to_numpy(out["images"])
    assert images.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(images, 1.0, rtol=1e-5)  # digits scale 1/16
    assert keras.ops.convert_to_numpy(preprocessor(np.zeros((3, 8, 8, 1)))).shape == (3, 8, 8, 1)
    with pytest.raises(ValueError, match="prompts"):
        preprocessor({"captions": ["one"]})


def synthetic_pairs(n, seed):
    """Raw pairs. Class c: its own 8x8 pattern (stripes, checkerboard, ...)
    plus noise, on the digits' 0..16 scale; caption 'a photo of the digit <c>.'."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    rows, cols = np.mgrid[0:8, 0:8]
    patterns = np.stack([rows % 2, cols % 2, (rows + cols) % 2, (rows // 4 + cols // 4) % 2])
    images = 12.0 * patterns[labels][..., None] + rng.uniform(0, 4, (n, 8, 8, 1))
    captions = [f"a photo of the digit {DIGIT_WORDS[c]}." for c in labels]
    return {"images": images.astype("float32"), "prompts": captions}, labels


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    task = presets.from_preset(
        "limoe_tiny", num_layers=2, hidden_dim=16, mlp_dim=32, num_heads=2,
        embedding_dim=16, num_experts=4,
    )
    x, _ = synthetic_pairs(2 * NUM_CLASSES, seed=0)
    task.compile(optimizer=keras.optimizers.AdamW(3e-3))
    # Raw images and captions go through the preset's preprocessor; batches
    # of one pair per class; 40 steps.
    history = task.fit(x, batch_size=NUM_CLASSES, epochs=20, shuffle=False, verbose=0)
    return task, history.history


def test_contrastive_training_decreases_loss(trained):
    task, history = trained
    assert isinstance(task, MoEDualEncoderContrastive)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["image_to_text_accuracy"][-1] > history["image_to_text_accuracy"][0]
    bad = {"images": np.zeros((2, 9, 9, 1), "float32"),
           "token_ids": np.ones((2, 16), "int32"),
           "padding_mask": np.ones((2, 16), "int32")}
    with pytest.raises(ValueError, match="prompts"):  # the preprocessor wants raw captions
        task.predict(bad, verbose=0)
    with pytest.raises(ValueError, match=r"images.*\(batch, 8, 8, 1\)"):
        MoEDualEncoderContrastive(task.backbone).predict(bad, verbose=0)


def test_zero_shot_classifier(trained, tmp_path):
    task, _ = trained
    preprocessor = task.preprocessor
    classifier = MoEDualEncoderZeroShotClassifier(
        task.backbone,
        class_names=list(DIGIT_WORDS[:NUM_CLASSES]),
        preprocessor=preprocessor,
        templates=["a photo of the digit {}."],  # the training caption
    )
    x, labels = synthetic_pairs(8, seed=1)
    big = np.repeat(np.repeat(x["images"], 2, axis=1), 2, axis=2)  # 16x16: resized back
    logits = classifier.predict(big.astype("float32"), verbose=0)
    assert logits.shape == (8, NUM_CLASSES)
    table = keras.ops.convert_to_numpy(classifier.class_embeddings.embeddings)
    np.testing.assert_allclose(np.linalg.norm(table, axis=-1), 1.0, rtol=1e-5)
    assert np.mean(np.argmax(logits, -1) == labels) >= 0.5  # trained on these captions

    path = os.path.join(tmp_path, "zero_shot.keras")
    classifier.save(path)
    restored = keras.saving.load_model(path)
    assert restored.class_names == classifier.class_names
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored.class_embeddings.embeddings), table, atol=1e-6
    )
    assert restored.preprocessor.tokenizer.vocabulary == preprocessor.tokenizer.vocabulary
    with pytest.raises(ValueError, match="placeholder"):
        MoEDualEncoderZeroShotClassifier(task.backbone, ["one"], templates=["no slot"])
    with pytest.raises(ValueError, match="class_names"):
        MoEDualEncoderZeroShotClassifier(task.backbone, "one")


def test_fine_tuning_the_zero_shot_classifier_leaves_the_text_tower_as_it_is():
    # The class table stands in for the text tower: its own weights are
    # non-trainable here (no weight decay, no warning that they get no
    # gradient), the image tower trains.
    from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
    from tests import configs

    vocabulary_size = MoEDualEncoderTokenizer().vocabulary_size()
    backbone = LIMoEBackbone(**{**configs.LIMOE, "vocabulary_size": vocabulary_size})
    classifier = MoEDualEncoderZeroShotClassifier(backbone, ["zero", "one", "two"],
                                                  templates=["{}"])
    image_ids = {id(v) for v in backbone.image_encoder.weights}
    text_only = [v for v in backbone.text_encoder.weights if id(v) not in image_ids]
    trainable_ids = {id(v) for v in classifier.trainable_variables}
    assert text_only and not any(id(v) in trainable_ids for v in text_only)
    assert len(classifier.trainable_weights) + len(classifier.non_trainable_weights) == len(
        classifier.weights)
    text_before = [keras.ops.convert_to_numpy(v) for v in text_only]
    image_before = [keras.ops.convert_to_numpy(v) for v in backbone.image_encoder.trainable_weights]
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.5),
                       run_eagerly=keras.backend.backend() != "jax")  # one step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.fit(configs.images(4, configs.LIMOE["image_shape"]), np.array([0, 1, 2, 1]),
                       batch_size=4, verbose=0)
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    for variable, before in zip(text_only, text_before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), before)
    assert any(np.any(keras.ops.convert_to_numpy(v) != before)
               for v, before in zip(backbone.image_encoder.trainable_weights, image_before))


def test_save_to_preset_round_trip(trained, tmp_path):
    task, _ = trained
    path = presets.save_to_preset(task, os.path.join(tmp_path, "limoe_tiny_trained"))
    restored = presets.from_preset(path)
    assert isinstance(restored, MoEDualEncoderContrastive)
    assert restored.backbone.get_config() == task.backbone.get_config()
    assert restored.preprocessor.tokenizer.vocabulary == task.preprocessor.tokenizer.vocabulary
    for got, want in zip(restored.backbone.get_weights(), task.backbone.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_presets_registered():
    rows = {row["name"]: row for row in presets.list_presets(family="moe_dual_encoder")}
    assert {"limoe_b16_e8_k1", "limoe_tiny"} <= set(rows)
    assert rows["limoe_b16_e8_k1"]["params_total"] > 2.5e8
    assert 1e5 < rows["limoe_tiny"]["params_total"] < 1e6
    for name in ("limoe_b16_e8_k1", "limoe_tiny"):
        row = rows[name]
        assert not row["has_weights"] and "No pretrained weights" in row["description"]
        assert row["task"] == "MoEDualEncoderContrastive"
    # The trained tiny preset ships its weights inside the package.
    assert rows["limoe_tiny_digits"]["has_weights"]


def _load_without_compile_warnings(path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = keras.saving.load_model(path)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "compile()" in m or "Skipping variable loading" in m]
    return restored


def test_keras_files_restore_compile_settings_and_optimizer_state(trained, tmp_path):
    # Both tasks override compile() with defaults of their own; a .keras file
    # must still recompile them and reload the saved optimizer variables.
    task, _ = trained
    path = os.path.join(tmp_path, "contrastive.keras")
    task.save(path)
    restored = _load_without_compile_warnings(path)
    assert isinstance(restored.optimizer, keras.optimizers.AdamW)
    assert int(restored.optimizer.iterations) == int(task.optimizer.iterations) > 0
    for a, b in zip(restored.optimizer.variables, task.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert restored.loss is not None

    classifier = MoEDualEncoderZeroShotClassifier(
        task.backbone, class_names=list(DIGIT_WORDS[:NUM_CLASSES]),
        preprocessor=task.preprocessor, templates=["a photo of the digit {}."],
    )
    classifier.compile()
    path = os.path.join(tmp_path, "zero_shot_compiled.keras")
    classifier.save(path)
    restored = _load_without_compile_warnings(path)
    x, labels = synthetic_pairs(8, seed=1)
    metrics = restored.evaluate(x["images"], labels, verbose=0, return_dict=True)
    assert set(metrics) >= {"loss", "accuracy"}  # the compile defaults came back
