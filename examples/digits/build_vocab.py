"""Builds the WordPiece vocabulary shipped with the dual-encoder presets.

Run from the repository root (it rewrites the asset atomically):

    python examples/digits/build_vocab.py

The vocabulary is small on purpose (413 entries): the special tokens,
punctuation, the ten digits, every word of the digit caption and prompt
templates below and of the digit names, a hand-picked list of common English words for
short captions, and the 26 letters both as word starts and as `##`
continuations, so any lower-case ASCII word tokenises without `[UNK]` (an
unknown word is spelled out letter by letter).
"""

import os
import re
import tempfile

from keras_sparse_moe.data.prompts import DIGIT_WORDS as DIGIT_NAMES

VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "keras_sparse_moe",
                          "models", "moe_dual_encoder", "assets", "vocab.txt")
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
GENERIC_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
PUNCTUATION = tuple(".,!?'\"-:;()/&+%")
COMMON_WORDS = """
a about above across after again against all almost along also always am among an and
animal another any are around as at away baby back bad ball bed before behind below
beside best between big bird black blue boat body book both bottom box boy bright brown
building but by car card cat center chair child city clear close clean cloud cold color
colored come corner could cup cut dark day dog done door down draw drawing drawn dress
during each early edge empty end even evening every eye face fast few field fine fish
five flower fly food for four from front full game girl glass go good grass gray great
green ground group hair half hand handwritten happy hard has have he head her here high
hill him his holding home horse house how i in inside into is it its just kind large
last left letter light like line little long look looking low made man many map marked
me middle more morning most mountain much my name near new next night no not now number
object of off old on one only open or orange other our out outside over page paper park
part people person photo picture pink place plant plate point poster pretty print purple
quick rather red right river road rock room round row same sand scanned scene sea see
seen set shape she shirt short show side sign simple single sketch sky small snow so
some something square stand standing still stone street sun table tall that the their
them then there these they thick thin this those three through to together top toward
tree two under up us very view wall was water way we wear were white who whole wide
window with without woman word world written yellow you young your zero
one two three four five six seven eight nine ten digit digits numeral figure
image images photograph pixel pixels resolution blurry sharp noisy rotated tilted upside
centered bold faint stroke strokes ink pen pencil chalk black-and-white grayscale
""".split()


def template_words():
    """Lower-case words of the templates and digit names."""
    text = " ".join(DIGIT_TEMPLATES + GENERIC_TEMPLATES + DIGIT_NAMES)
    return set(re.findall(r"[a-z]+", text.lower().replace("{}", " ")))


def build_vocabulary():
    """The vocabulary as a list of tokens (index = token id; `[PAD]` is 0)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = set()
    for word in COMMON_WORDS:
        words.update(re.findall(r"[a-z]+", word.lower()))
    words |= template_words()
    words -= set(letters)
    vocabulary = list(SPECIAL_TOKENS) + list(PUNCTUATION) + [str(d) for d in range(10)]
    vocabulary += letters + ["##" + letter for letter in letters] + sorted(words)
    if len(set(vocabulary)) != len(vocabulary):
        raise AssertionError("duplicate vocabulary entries")
    return vocabulary


def write_vocabulary(path=VOCAB_PATH):
    """Atomically write the vocabulary file (one token a line)."""
    vocabulary = build_vocabulary()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".vocab-", suffix=".txt", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write("\n".join(vocabulary) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path, len(vocabulary)


if __name__ == "__main__":
    written, size = write_vocabulary()
    print(f"wrote {size} tokens to {written}")
