"""Zero-shot image classifier built from class-name prompts."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import Task

from keras_sparse_moe.data.prompts import DEFAULT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import zero_shot_prompts

from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_layers import ClassEmbeddings
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_task_checks import (
    DualEncoderInputChecks,
)
from keras_sparse_moe.models.moe_dual_encoder.dual_encoder_task_checks import (
    check_dual_encoder_backbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_backbone import (
    MoEDualEncoderBackbone,
)
from keras_sparse_moe.models.moe_dual_encoder.moe_dual_encoder_preprocessor import (
    MoEDualEncoderPreprocessor,
)
from keras_sparse_moe.models.shuffled_fit import ShuffledFitMixin
from keras_sparse_moe.models.task_compile import CompileConfigMixin
from keras_sparse_moe.presets import PresetMixin


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class MoEDualEncoderZeroShotClassifier(
    CompileConfigMixin, DualEncoderInputChecks, ShuffledFitMixin, PresetMixin, Task
):
    """Zero-shot image classifier from a dual encoder (CLIP-style prompt
    ensembling, Radford et al. 2021).

    Each class name is put into every template (`"a photo of a {}."`,
    ...); the prompts are encoded by the text tower, the embeddings of
    a class are averaged over templates and re-normalised, and stored as a
    fixed `(num_classes, embedding_dim)` table. The model maps images to
    logits `(batch, num_classes)`: the backbone's `contrastive_head` applied
    to the image embeddings and the class table (so the learned temperature
    and bias apply; `softmax` of the logits gives class probabilities for a
    softmax-trained backbone, `sigmoid` for a sigmoid-trained one).

    Call `refresh_class_embeddings()` after training the backbone further.
    A saved classifier (preset, `.keras` file) restores its table as saved.

    `compile()` defaults (for `evaluate`): sparse categorical cross-entropy on
    the logits and `accuracy`; AdamW (1e-4) if the image tower is fine-tuned.
    Fine-tuning updates the image tower and the contrastive head; the text
    tower's own weights are non-trainable in this model (the class table
    stands in for the text tower), so they stay as they are.

    Args:
        backbone: a `MoEDualEncoderBackbone`.
        class_names: list of strings, one per class (index = label).
        preprocessor: a `MoEDualEncoderPreprocessor` (its tokenizer encodes
            the prompts; with an image converter `predict` takes raw images).
            Default: the shipped tokenizer and no image converter.
        templates: list of templates, `{}` standing for the class name;
            default `keras_sparse_moe.data.prompts.DEFAULT_PROMPT_TEMPLATES`.

    Example:
    >>> import numpy as np
    >>> from keras_sparse_moe.models.moe_dual_encoder import LIMoEBackbone
    >>> backbone = LIMoEBackbone(vocabulary_size=413, image_shape=(8, 8, 1),
    ...     patch_size=4, max_sequence_length=12, num_layers=2, num_heads=2,
    ...     hidden_dim=8, mlp_dim=16, num_experts=4)
    >>> classifier = MoEDualEncoderZeroShotClassifier(
    ...     backbone, class_names=["zero", "one", "two"],
    ...     templates=["a photo of the digit {}.", "the handwritten digit {}."])
    >>> classifier.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0).shape
    (2, 3)
    """

    backbone_cls = MoEDualEncoderBackbone
    preprocessor_cls = MoEDualEncoderPreprocessor

    def __init__(self, backbone, class_names, preprocessor=None, templates=None, **kwargs):
        # False when restoring (`from_config`): the table is then state that
        # the weights restore.
        compute_table = kwargs.pop("_compute_class_embeddings", True)
        check_dual_encoder_backbone(backbone)
        templates = tuple(DEFAULT_PROMPT_TEMPLATES if templates is None else templates)
        zero_shot_prompts(class_names, templates)  # validates both
        if preprocessor is None:
            preprocessor = MoEDualEncoderPreprocessor(sequence_length=backbone.max_sequence_length)
        if not isinstance(preprocessor, MoEDualEncoderPreprocessor):
            raise ValueError(
                "Argument `preprocessor` must be a MoEDualEncoderPreprocessor; received "
                f"{type(preprocessor).__name__}."
            )
        if preprocessor.sequence_length != backbone.max_sequence_length:
            raise ValueError(
                f"The preprocessor packs captions to {preprocessor.sequence_length} tokens but "
                f"the backbone expects max_sequence_length={backbone.max_sequence_length}."
            )
        embedding_dim = int(backbone.image_encoder.outputs[0].shape[-1])

        self.backbone = backbone
        self.preprocessor = preprocessor
        self.class_embeddings = ClassEmbeddings(
            len(class_names), embedding_dim, name="class_embeddings"
        )
        images = keras.Input(shape=backbone.image_shape, name="images")
        image_embeddings = backbone.image_encoder(images)
        class_table = self.class_embeddings(image_embeddings)
        logits = backbone.contrastive_head(image_embeddings, class_table)
        super().__init__(inputs=images, outputs=logits, **kwargs)

        self.class_names = list(class_names)
        self.templates = list(templates)
        if compute_table:
            self.refresh_class_embeddings()

    @classmethod
    def from_config(cls, config):
        # The class table is restored with the weights, not recomputed: it is
        # what was saved (maybe from an earlier text tower), and the
        # tokenizer of a preset gets its vocabulary only after construction.
        return super().from_config({**config, "_compute_class_embeddings": False})

    def class_text_embeddings(self):
        """Prompt-ensembled class embeddings `(num_classes, dim)` (NumPy) from
        the current text tower."""
        prompts = zero_shot_prompts(self.class_names, self.templates)
        flat = [prompt for group in prompts for prompt in group]
        packed = self.preprocessor({"prompts": flat})
        embeddings = self.backbone.text_encoder.predict(
            {key: ops.convert_to_numpy(packed[key]) for key in ("token_ids", "padding_mask")},
            batch_size=len(flat),
            verbose=0,
        ).astype("float32")
        embeddings = embeddings.reshape(len(self.class_names), len(self.templates), -1).mean(1)
        norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)

    def refresh_class_embeddings(self):
        """Recompute the class table from the prompts with the current text tower."""
        self.class_embeddings.embeddings.assign(self.class_text_embeddings())

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configure evaluation / fine-tuning; `"auto"` picks the defaults
        described in the class docstring."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    # The text tower is not in this model's graph: the class table stands in
    # for it. Its own weights (token and position embeddings, text
    # projection, ...; not those it shares with the image tower) are
    # therefore non-trainable here, so that fine-tuning gives them no
    # optimizer state and no weight decay (a zero gradient under JAX, none
    # under TensorFlow, which warned that they had none): the text tower stays
    # the one the class table came from, on every backend.
    def _text_only_ids(self):
        backbone = self.backbone
        shared = {id(v) for v in backbone.image_encoder.variables}
        shared.update(id(v) for v in backbone.contrastive_head.variables)
        return {id(v) for v in backbone.text_encoder.variables if id(v) not in shared}

    def _split_text_only(self, trainable, non_trainable):
        """`(trainable, non_trainable)` with the text tower's own variables
        moved from the first to the second."""
        text_only = self._text_only_ids()
        return ([v for v in trainable if id(v) not in text_only],
                non_trainable + [v for v in trainable if id(v) in text_only])

    @property
    def trainable_variables(self):
        return self._split_text_only(super().trainable_variables, [])[0]

    @property
    def non_trainable_variables(self):
        return self._split_text_only(super().trainable_variables,
                                     super().non_trainable_variables)[1]

    @property
    def trainable_weights(self):
        return self._split_text_only(super().trainable_weights, [])[0]

    @property
    def non_trainable_weights(self):
        return self._split_text_only(super().trainable_weights, super().non_trainable_weights)[1]

    def get_config(self):
        config = super().get_config()
        config.update({"class_names": self.class_names, "templates": self.templates})
        return config
