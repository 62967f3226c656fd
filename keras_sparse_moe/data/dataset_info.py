"""`DatasetInfo`: what a dataset source tells the model and the recipes."""

import dataclasses

from keras_sparse_moe.data.prompts import DEFAULT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import zero_shot_prompts


@dataclasses.dataclass
class DatasetInfo:
    """Metadata of a prepared dataset.

    Args:
        spec: the dataset spec string (`"digits"`,
            `"optdigits-train"`, `"tfds:NAME"`, `"folder:PATH"`).
        source: `"digits"`, `"optdigits-train"`,
            `"tfds"` or `"folder"`.
        num_classes: number of classes, or None for unlabelled data.
        class_names: tuple of `num_classes` names (index = label), or None.
        counts: dict split name -> number of examples (None when unknown);
            splits absent from the dict do not exist.
        image_shape: native `(height, width, channels)`; height/width are None
            when the images have mixed sizes.
        max_value: the largest raw pixel value (16 for digits, 255 for 8-bit
            images); the pipelines divide by it when `rescale=True`.
        prompt_templates: zero-shot prompt templates (see `zero_shot_prompts`).
        caption_templates: templates used to caption images from their labels
            (image-text pairs), or None when captions come from the data.
        class_fields: optional per-class dicts of extra template fields (for
            digits: `{"digit": "7", "word": "seven"}`).
        splits: dict split name -> where the split comes from (for logs).

    Example:
    >>> info = DatasetInfo("digits", "digits", 2, ("0", "1"), {"train": 10})
    >>> info.zero_shot_prompts(["the number {}"])
    [['the number 0'], ['the number 1']]
    """

    spec: str
    source: str
    num_classes: int = None
    class_names: tuple = None
    counts: dict = dataclasses.field(default_factory=dict)
    image_shape: tuple = (None, None, 3)
    max_value: float = 255.0
    prompt_templates: tuple = DEFAULT_PROMPT_TEMPLATES
    caption_templates: tuple = None
    class_fields: tuple = None
    splits: dict = dataclasses.field(default_factory=dict)

    def zero_shot_prompts(self, templates=None):
        """Per-class lists of prompts (class index -> list of strings)."""
        if not self.class_names:
            raise ValueError(
                f"Dataset {self.spec!r} has no class names, so zero-shot prompts cannot be made."
            )
        return zero_shot_prompts(
            self.class_names,
            self.prompt_templates if templates is None else templates,
            class_fields=self.class_fields,
        )

    def to_dict(self):
        """A JSON-serialisable dict (for run metadata and presets)."""
        out = dataclasses.asdict(self)
        for key in ("class_names", "image_shape", "prompt_templates", "caption_templates", "class_fields"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out
