"""Caption and zero-shot prompt templates (digits and generic objects)."""

from keras_sparse_moe.data.prompts import DIGIT_WORDS

DIGIT_NAMES = DIGIT_WORDS
"""Class names of the ten digits ("zero" ... "nine"), index = digit; the
words of `keras_sparse_moe.data.prompts`."""

DIGIT_TEMPLATES = (
    "a photo of the digit {}.",
    "a photo of the number {}.",
    "an image of a handwritten {}.",
    "a blurry photo of the digit {}.",
    "a low resolution image of the number {}.",
    "a drawing of the digit {}.",
    "the handwritten digit {}.",
    "a small picture of a {}.",
)
"""Templates for digit captions and zero-shot digit prompts; `{}` is a class name."""

GENERIC_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
)
"""Templates for zero-shot prompts of other class names."""


def make_prompts(class_names, templates):
    """`[[template.format(name) for template in templates] for name in
    class_names]`, after checking the arguments.

    Example:
    >>> make_prompts(["seven"], ["the digit {}."])
    [['the digit seven.']]
    """
    if isinstance(class_names, str) or not class_names:
        raise ValueError(
            "Argument `class_names` must be a non-empty list of strings; "
            f"received {class_names!r}."
        )
    if isinstance(templates, str) or not templates:
        raise ValueError(
            "Argument `templates` must be a non-empty list of strings containing '{}'; "
            f"received {templates!r}."
        )
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                "Every template must be a string with exactly one '{}' placeholder for the "
                f"class name; received {template!r}."
            )
    for name in class_names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Every class name must be a non-empty string; received {name!r}.")
    return [[template.format(name) for template in templates] for name in class_names]
