"""Your own images in a folder: `folder:PATH`.

Layouts (class names are the sub-folder names, sorted; labels are indices
into that order; images may sit in nested folders inside a class folder):

    PATH/CLASS/*.png                       one folder per class
    PATH/{train,validation|val,test}/CLASS/*.png   explicit splits

Without explicit `test` / `validation` folders those splits are carved out
deterministically, per class: the files of a class are ordered by the MD5
hash of their path relative to PATH and the last `round(fraction * n)` are
held out (see `splitting.stratified_split`). The split depends only on the
file names, never on a training seed.

Every candidate file (extensions in `IMAGE_EXTENSIONS`) is decoded once with
Pillow while scanning: unreadable files are skipped and their number is
reported in a `UserWarning`. Images may have mixed sizes (the pipelines resize
them) and modes: the folder is read as grayscale when every image is
grayscale, else as RGB (alpha dropped).

A class-per-folder dataset needs at least two classes, and every class
folder must hold a readable image (an empty folder would otherwise become a
class that is never seen): both are errors naming the folder. Classes with
fewer than `MIN_IMAGES_PER_CLASS` images give a `UserWarning`.

Image-text pairs: a UTF-8 captions file, by default `PATH/captions.tsv`, one
caption per line as `relative/path/to/image.png<TAB>caption text` (path
relative to PATH with `/` separators; several lines for one image give it
several captions; blank lines and lines starting with `#` are ignored). Only
captioned images are used; their split is the leading `train/`, `validation/`
(`val/`) or `test/` folder of the path when present, else carved out as above.
"""

import collections
import dataclasses
import logging
import os
import warnings

import numpy as np

from keras_sparse_moe.data.splitting import stratified_split

logger = logging.getLogger("keras_sparse_moe.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
CAPTIONS_FILE = "captions.tsv"
MIN_IMAGES_PER_CLASS = 5
"""Fewer images than this in a class folder give a warning."""
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La")


@dataclasses.dataclass
class FolderData:
    """What a folder scan found.

    Attributes:
        root: absolute folder path.
        class_names: tuple of class names, or None (captions without classes).
        splits: dict split -> dict with "paths" (list of absolute paths),
            "labels" (int32 array or None) and, for image-text, "captions"
            (list of lists of strings).
        channels: 1 (all grayscale) or 3.
        image_shape: (height, width, channels), height/width None when mixed.
        skipped: list of (relative path, reason) of unreadable files.
        sources: dict split -> how the split was formed (for logs).
    """

    root: str
    class_names: tuple
    splits: dict
    channels: int
    image_shape: tuple
    skipped: list
    sources: dict


def _is_image_name(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(directory):
    """Image files under `directory` (recursive), sorted, as absolute paths."""
    found = []
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(current, f) for f in sorted(files) if _is_image_name(f))
    return found


def _subdirs(directory):
    return sorted(
        d for d in os.listdir(directory) if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))
    )


def _inspect(path):
    """(mode, (width, height)) of a fully decodable image, or raise."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.mode, image.size


def _check_root(path):
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"Image folder {os.fspath(path)!r} does not exist (resolved to {root!r}). "
            "A folder dataset is 'folder:PATH' with one sub-folder of images per class."
        )
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {os.fspath(path)!r} is a file, not a folder.")
    return root


def _scan_files(root, files, check_images):
    """Decode-check `files`; return (kept files, modes, sizes, skipped)."""
    kept, modes, sizes, skipped = [], set(), set(), []
    if len(files) > 2000:
        logger.info("Checking %s image files in %s ...", f"{len(files):,}", root)
    for i, path in enumerate(files):
        if check_images:
            try:
                mode, size = _inspect(path)
            except Exception as error:  # noqa: BLE001 - any decoding failure means "unreadable"
                message = str(error)
                reason = type(error).__name__ + ("" if path in message or not message else f": {message}")
                skipped.append((os.path.relpath(path, root), reason))
                continue
            modes.add(mode)
            sizes.add(size)
        kept.append(path)
        if (i + 1) % 5000 == 0:
            logger.info("  checked %s / %s", f"{i + 1:,}", f"{len(files):,}")
    return kept, modes, sizes, skipped


def _warn_skipped(root, skipped):
    if skipped:
        shown = "; ".join(f"{p} ({reason[:80]})" for p, reason in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s) in {root}: {shown}{more}.",
            UserWarning,
            stacklevel=3,
        )


def _channels_and_shape(modes, sizes):
    channels = 1 if modes and all(m in _GRAY_MODES for m in modes) else 3
    if len(sizes) == 1:
        (width, height), = sizes
        return channels, (height, width, channels)
    return channels, (None, None, channels)


def _assign_splits(root, groups, validation_fraction, test_fraction, stratify=True):
    """groups: split ("train"/"validation"/"test"/None) -> list of (path, label, extra).

    Entries of group None (no explicit split folder) and, when no explicit
    test / validation split exists, the train group, are carved."""
    sources = {}
    pool = groups.get("train", []) + groups.get(None, [])
    out = {}
    for name, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if groups.get(name):
            out[name] = groups[name]
            sources[name] = f"{name}/ folder"
            continue
        if fraction <= 0 or not pool:
            continue
        keys = [os.path.relpath(p, root) for p, _, _ in pool]
        labels = [lab for _, lab, _ in pool] if stratify and pool[0][1] is not None else None
        kept, held = stratified_split(keys, labels, fraction)
        if len(held):
            out[name] = [pool[i] for i in held]
            sources[name] = f"last {fraction:.0%} of each class by file-name hash" if labels else (
                f"last {fraction:.0%} by file-name hash"
            )
            pool = [pool[i] for i in kept]
    out["train"] = pool
    sources["train"] = "train/ folder" if groups.get("train") else "remaining files"
    order = ("train", "validation", "test")
    return {k: out[k] for k in order if k in out}, {k: sources[k] for k in order if k in sources}


def _pack(entries, with_labels, with_captions):
    split = {"paths": [p for p, _, _ in entries]}
    split["labels"] = np.asarray([lab for _, lab, _ in entries], np.int32) if with_labels else None
    if with_captions:
        split["captions"] = [extra for _, _, extra in entries]
    return split


def scan_image_folder(path, validation_fraction=0.1, test_fraction=0.2, check_images=True):
    """Scan a class-per-folder image dataset and split it (see module docstring).

    Args:
        path: the folder.
        validation_fraction: fraction of the training files held out per class
            when there is no validation folder.
        test_fraction: fraction held out per class when there is no test folder.
        check_images: decode every file once to skip unreadable ones (and to
            detect grayscale / sizes).

    Returns:
        A `FolderData`.
    """
    root = _check_root(path)
    top = _subdirs(root)
    split_dirs = [d for d in top if d.lower() in SPLIT_FOLDERS]
    layout_roots = {SPLIT_FOLDERS[d.lower()]: os.path.join(root, d) for d in split_dirs} or {None: root}
    if split_dirs:
        others = [d for d in top if d not in split_dirs]
        if others:
            logger.warning(
                "Folder %s has split folders (%s); ignoring the other folders %s.",
                root, ", ".join(split_dirs), ", ".join(others),
            )
    class_names = sorted({c for r in layout_roots.values() for c in _subdirs(r)})
    if not class_names:
        loose = _list_images(root)
        hint = (
            f" It holds {len(loose)} image(s) but no class sub-folders: a classifier needs labels, so "
            "put the images of each class in their own sub-folder (PATH/CLASS/image.png)."
            if loose else " Expected PATH/CLASS/image.png (one sub-folder per class)."
        )
        raise ValueError(f"Image folder {root!r} has no class sub-folders.{hint}")
    index = {name: i for i, name in enumerate(class_names)}
    candidates = []
    for split, split_root in layout_roots.items():
        for name in _subdirs(split_root):
            candidates.extend((split, f, index[name]) for f in _list_images(os.path.join(split_root, name)))
    if not candidates:
        raise ValueError(
            f"Image folder {root!r} has class sub-folders ({', '.join(class_names[:10])}) but no image "
            f"files (extensions: {', '.join(IMAGE_EXTENSIONS)})."
        )
    logger.info("folder:%s: scanning %s candidate image files in %d classes", root, f"{len(candidates):,}", len(class_names))
    kept, modes, sizes, skipped = _scan_files(root, [f for _, f, _ in candidates], check_images)
    _warn_skipped(root, skipped)
    if not kept:
        raise ValueError(f"Image folder {root!r} has no readable image: all {len(candidates)} files failed to decode.")
    kept_set = set(kept)
    groups = collections.defaultdict(list)
    for split, f, label in candidates:
        if f in kept_set:
            groups[split].append((f, label, None))
    _check_classes(root, layout_roots, class_names, groups)
    splits, sources = _assign_splits(root, groups, validation_fraction, test_fraction)
    if not splits["train"]:
        raise ValueError(f"Image folder {root!r} has no training images (only held-out splits).")
    channels, image_shape = _channels_and_shape(modes, sizes)
    return FolderData(
        root=root,
        class_names=tuple(class_names),
        splits={k: _pack(v, True, False) for k, v in splits.items()},
        channels=channels,
        image_shape=image_shape,
        skipped=skipped,
        sources=sources,
    )


def _check_classes(root, layout_roots, class_names, groups):
    """Refuse empty class folders and a single class; warn about classes
    with fewer than `MIN_IMAGES_PER_CLASS` images."""
    counts = collections.Counter(label for entries in groups.values() for _, label, _ in entries)
    for label, name in enumerate(class_names):
        if not counts[label]:
            folders = [os.path.join(r, name) for r in layout_roots.values()
                       if os.path.isdir(os.path.join(r, name))]
            raise ValueError(
                f"Class folder {' and '.join(repr(f) for f in folders)} has no readable image "
                f"(extensions: {', '.join(IMAGE_EXTENSIONS)}): every sub-folder of {root!r} is a "
                "class, so add images to it or remove it."
            )
    if len(class_names) == 1:
        raise ValueError(
            f"Image folder {root!r} has a single class folder ({class_names[0]!r}): a classifier "
            "needs at least two classes (one sub-folder per class, PATH/CLASS/image.png)."
        )
    few = [f"{name} ({counts[label]})" for label, name in enumerate(class_names)
           if counts[label] < MIN_IMAGES_PER_CLASS]
    if few:
        warnings.warn(
            f"Image folder {root!r}: {len(few)} class(es) with fewer than "
            f"{MIN_IMAGES_PER_CLASS} images: {', '.join(few[:10])}{', ...' if len(few) > 10 else ''}. "
            "A model learns little from so few, and the validation and test splits may miss "
            "them; add images.",
            UserWarning,
            stacklevel=3,
        )


def read_captions_file(path):
    """Parse a captions file into `{relative_path: [caption, ...]}` (see the
    module docstring for the format).

    Example:
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "captions.tsv")
    >>> _ = open(f, "w").write("# comment\\na/1.png\\ta red square\\na/1.png\\tred\\n")
    >>> read_captions_file(f)
    {'a/1.png': ['a red square', 'red']}
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Captions file {path!r} does not exist. An image-text folder needs one: UTF-8 lines "
            "'relative/path.png<TAB>caption'."
        )
    captions = collections.defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" not in line:
                raise ValueError(
                    f"{path}:{number}: expected 'relative/path<TAB>caption', found no tab in {line[:80]!r}."
                )
            rel, caption = line.split("\t", 1)
            rel = rel.strip().replace("\\", "/")
            while rel.startswith("./"):
                rel = rel[2:]
            caption = caption.strip()
            if not rel or not caption:
                raise ValueError(f"{path}:{number}: empty path or caption in {line[:80]!r}.")
            captions[rel].append(caption)
    if not captions:
        raise ValueError(f"Captions file {path!r} has no captions.")
    return dict(captions)


def scan_captioned_folder(path, captions_file=None, validation_fraction=0.1, test_fraction=0.2, check_images=True):
    """Scan an image-text folder with a captions file (see module docstring).

    Returns:
        A `FolderData` whose splits hold "paths", "captions" and no labels.
    """
    root = _check_root(path)
    captions_path = os.path.join(root, CAPTIONS_FILE) if captions_file is None else os.path.abspath(captions_file)
    table = read_captions_file(captions_path)
    missing = [rel for rel in table if not os.path.isfile(os.path.join(root, rel))]
    if missing:
        warnings.warn(
            f"{len(missing)} captioned file(s) listed in {captions_path} do not exist under {root} "
            f"(e.g. {missing[0]!r}); they are skipped.",
            UserWarning,
            stacklevel=2,
        )
    rels = [rel for rel in table if rel not in set(missing)]
    logger.info("folder:%s: %s captioned images in %s", root, f"{len(rels):,}", captions_path)
    kept, modes, sizes, skipped = _scan_files(root, [os.path.join(root, r) for r in rels], check_images)
    _warn_skipped(root, skipped)
    if not kept:
        raise ValueError(f"Captions file {captions_path!r} lists no readable image under {root!r}.")
    groups = collections.defaultdict(list)
    for f in kept:
        rel = os.path.relpath(f, root).replace(os.sep, "/")
        first = rel.split("/", 1)[0].lower()
        groups[SPLIT_FOLDERS.get(first) if "/" in rel else None].append((f, None, table[rel]))
    splits, sources = _assign_splits(root, groups, validation_fraction, test_fraction, stratify=False)
    channels, image_shape = _channels_and_shape(modes, sizes)
    return FolderData(
        root=root,
        class_names=None,
        splits={k: _pack(v, False, True) for k, v in splits.items()},
        channels=channels,
        image_shape=image_shape,
        skipped=skipped,
        sources=sources,
    )


def _pil_decode(path, channels):
    from PIL import Image
    from PIL import ImageOps

    with Image.open(path.decode("utf-8") if isinstance(path, bytes) else str(path)) as image:
        image = ImageOps.exif_transpose(image)
        image = image.convert("L" if int(channels) == 1 else "RGB")
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def image_file_decoder(channels):
    """A `decode_fn` for the pipelines: file path tensor -> uint8 (H, W, channels)."""
    import tensorflow as tf

    def decode(path):
        image = tf.numpy_function(lambda p: _pil_decode(p, channels), [path], tf.uint8, stateful=False)
        image.set_shape((None, None, channels))
        return image

    return decode
