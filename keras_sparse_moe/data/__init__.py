"""Datasets and tf.data pipelines: the embedded digits, TFDS, image folders,
and image-text pairs for dual encoders.

Dataset specs: `"digits"`, `"optdigits-train"`,
`"tfds:NAME"`, `"folder:PATH"` (see `sources`). TFDS is imported only by the functions
that need it (`import keras_sparse_moe` itself imports Keras and, through
it, the backend).
"""

from keras_sparse_moe.data.dataset_info import DatasetInfo
from keras_sparse_moe.data.digits import DIGITS_CLASS_NAMES
from keras_sparse_moe.data.digits import DIGITS_MAX_VALUE
from keras_sparse_moe.data.digits import digits_split_indices
from keras_sparse_moe.data.digits import digits_split_ranges
from keras_sparse_moe.data.digits import load_digits
from keras_sparse_moe.data.image_folder import CAPTIONS_FILE
from keras_sparse_moe.data.image_folder import IMAGE_EXTENSIONS
from keras_sparse_moe.data.image_folder import read_captions_file
from keras_sparse_moe.data.optdigits import load_optdigits_train
from keras_sparse_moe.data.pipeline import make_image_text_pipeline
from keras_sparse_moe.data.pipeline import make_pipeline
from keras_sparse_moe.data.prompts import DEFAULT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import DIGIT_CAPTION_TEMPLATES
from keras_sparse_moe.data.prompts import DIGIT_PROMPT_TEMPLATES
from keras_sparse_moe.data.prompts import DIGIT_WORDS
from keras_sparse_moe.data.prompts import digit_captions
from keras_sparse_moe.data.prompts import zero_shot_prompts
from keras_sparse_moe.data.sources import Datasets
from keras_sparse_moe.data.sources import build_datasets
from keras_sparse_moe.data.sources import build_image_text_datasets
from keras_sparse_moe.data.sources import load_dataset
from keras_sparse_moe.data.sources import load_image_text_dataset
from keras_sparse_moe.data.sources import parse_spec
from keras_sparse_moe.data.sources import resolve_dataset
