"""Caption and zero-shot prompt templates.

A template is a `str.format` pattern. `{}` and `{name}` stand for the class
name (underscores shown as spaces); a dataset may offer extra per-class fields
(digits: `{digit}` -> "7", `{word}` -> "seven").
"""

import string

DEFAULT_PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
    "a close-up photo of a {}.",
    "a low-resolution photo of a {}.",
)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DIGIT_CAPTION_TEMPLATES = (
    "a handwritten digit {word}",
    "a photo of the number {digit}",
    "a handwritten {digit}",
    "a low-resolution image of the digit {word}",
    "the number {word}, written by hand",
    "a scanned digit {digit}",
    "a small picture of a {word}",
    "an 8x8 image of the digit {digit}",
)

DIGIT_PROMPT_TEMPLATES = DIGIT_CAPTION_TEMPLATES


def format_template(template, name, fields=None):
    """Fill one template for one class.

    Example:
    >>> format_template("a photo of a {}.", "golden_retriever")
    'a photo of a golden retriever.'
    >>> format_template("a handwritten {word}", "7", {"word": "seven"})
    'a handwritten seven'
    """
    name = str(name).replace("_", " ")
    try:
        return template.format(name, name=name, **(fields or {}))
    except (KeyError, IndexError) as error:
        allowed = ["{}", "{name}"] + ["{" + k + "}" for k in (fields or {})]
        raise ValueError(
            f"Template {template!r} uses a field this dataset does not provide ({error}); "
            f"allowed fields: {', '.join(allowed)}."
        ) from None


def zero_shot_prompts(class_names, templates=DEFAULT_PROMPT_TEMPLATES, class_fields=None):
    """Prompts for zero-shot classification: one list of strings per class.

    Args:
        class_names: sequence of class names.
        templates: sequence of templates (see the module docstring).
        class_fields: optional sequence of per-class dicts of extra fields.

    Example:
    >>> zero_shot_prompts(["cat", "dog"], ["a photo of a {}."])
    [['a photo of a cat.'], ['a photo of a dog.']]
    """
    if isinstance(class_names, str) or not class_names or not all(
        isinstance(name, str) and name.strip() for name in class_names
    ):
        raise ValueError(
            f"Argument `class_names` must be a non-empty list of non-empty strings; received "
            f"{class_names!r}."
        )
    if isinstance(templates, str):
        templates = [templates]
    if not templates or not all(isinstance(t, str) for t in templates):
        raise ValueError(
            f"Argument `templates` must be a non-empty list of strings; received {templates!r}."
        )
    for template in templates:
        if not any(field is not None for _, field, _, _ in string.Formatter().parse(template)):
            raise ValueError(
                f"Template {template!r} has no placeholder for the class name: use '{{}}' or "
                "'{name}', e.g. 'a photo of a {}.'."
            )
    class_fields = class_fields or [None] * len(class_names)
    return [
        [format_template(t, name, fields) for t in templates]
        for name, fields in zip(class_names, class_fields)
    ]


def digit_fields(label):
    """Template fields of digit `label` (0..9): `{"digit": "7", "word": "seven"}`."""
    return {"digit": str(int(label)), "word": DIGIT_WORDS[int(label)]}


def digit_captions(labels, templates=DIGIT_CAPTION_TEMPLATES):
    """All captions of each digit label: a list (one per label) of lists of strings.

    Example:
    >>> digit_captions([7], ["a handwritten digit {word}", "the number {digit}"])
    [['a handwritten digit seven', 'the number 7']]
    """
    table = zero_shot_prompts(
        [str(d) for d in range(10)], templates, [digit_fields(d) for d in range(10)]
    )
    return [table[int(label)] for label in labels]
