"""A streaming `images` source: a folder per class of image files, checked from the file listing
and a few images' headers only.

`data.path` (or each of `train_path`, `val_path`, `test_path`) holds one folder per class; a
class's label is its folder's index among the training folders' sorted names. With `data.path`
each file's split is a seeded hash of its path, made here from the listing. Every image is
converted to the first image's colours (grey "L" for greyscale, else "RGB") and resized to
`data.image_size: [height, width]` (default: the first image's size) as it is read. One example
is (channels, height, width) of uint8 pixels.
"""

import hashlib
import logging
import os

from orchestrator.config.streamed_source import PROBE_ROWS, READ_TASK_ROWS, SPLITS, SourceError, StreamedSource, num_classes_of, source_name

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The file endings a class folder's images are found by (others are skipped, and counted in the log)."""
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def inspect_image_folders(data: dict, keys: dict, seed: int) -> StreamedSource:
    """Check a folder-per-class image source from its listing and a few images.

    Args:
        data: the spec's `data` section as a dict (`image_size` optional).
        keys: the `data` keys naming each split's folder (`streamed_source.split_keys`).
        seed: the split's seed (`train.seed`).

    Raises:
        SourceError: a path is not a folder, it has fewer than 2 class folders holding images,
            a split has a class the training folder lacks, or a probed image cannot be decoded.

    Example:
        >>> inspect_image_folders({"source": "images", "path": "pets/"}, {"train": "path"}, seed=0)  # doctest: +SKIP
    """
    listed = {split: _class_images(key, data[key]) for split, key in keys.items()}
    class_names = tuple(sorted(listed["train"]))
    if len(class_names) < 2:
        raise SourceError(f"data.{keys['train']} {data[keys['train']]!r}: found {len(class_names)} class folder holding images; a classifier needs at least 2")
    for split, classes in listed.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise SourceError(f"data.{keys[split]}: class folder {unknown[0]!r} is not one of data.train_path's: {', '.join(class_names)}")
    units = {
        split: [{"path": path, "label": class_names.index(name)} for name in sorted(classes) for path in classes[name]]
        for split, classes in listed.items()
    }
    if keys == {"train": "path"}:
        units = _seeded_split(units["train"], data, seed)
    probed = [_probe(path) for path in _probed(listed["train"])]
    mode, size = probed[0][0], tuple(data.get("image_size") or probed[0][1])
    input_shape = (1 if mode == "L" else 3, *size)
    n_rows = {split: len(split_units) for split, split_units in units.items()}
    return StreamedSource(
        name=source_name(data),
        format="images",
        files={split: [unit["path"] for unit in split_units] for split, split_units in units.items()},
        split_from_seed=False,  # the files are split here, by path: no read decodes another split's images
        label_column="label",
        feature_columns=("image",),
        input_shape=input_shape,
        num_classes=num_classes_of(data, len(class_names) - 1, data[keys["train"]]),
        n_rows=n_rows,
        units=units,
        units_per_task=READ_TASK_ROWS,
        size_bytes=sum(n_rows.values()) * input_shape[0] * size[0] * size[1],
        class_names=class_names,
        image_mode=mode,
        val_fraction=data.get("val_fraction", 0.1),
        test_fraction=data.get("test_fraction", 0.2),
        seed=seed,
    )


def decode_image(path: str, mode: str, size=None):
    """One image file's pixels as a (channels, height, width) uint8 array.

    Args:
        path: the image file.
        mode: the PIL mode to convert it to ("L" or "RGB").
        size: (height, width) to resize to, or None to keep the file's size.

    Raises:
        SourceError: the file cannot be decoded as an image.

    Example:
        >>> decode_image("pets/cat/1.png", "RGB").shape  # doctest: +SKIP
        (3, 64, 64)
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image if image.mode == mode else image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]))
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise SourceError(f"{path}: cannot decode as an image: {error}") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _seeded_split(units, data, seed):
    # each file's split from a seeded hash of its path under data.path, as a row's split is made
    # from its values for the row sources: the same on every run of a seed, wherever the folder is
    split = {name: [] for name in SPLITS}
    val, test = data.get("val_fraction", 0.1), data.get("test_fraction", 0.2)
    for unit in units:
        name = os.path.relpath(unit["path"], data["path"]).encode()
        fraction = int.from_bytes(hashlib.blake2b(name, digest_size=8, salt=seed.to_bytes(8, "little")).digest(), "little") / 2**64
        split["val" if fraction < val else "test" if fraction < val + test else "train"].append(unit)
    return split


def _class_images(key, path):
    if not os.path.isdir(path):
        raise SourceError(f"data.{key} {path!r} is not a folder (source 'images' reads a folder per class)")
    classes, skipped = {}, 0
    for name in sorted(os.listdir(path)):
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            skipped += 1
            continue
        found = sorted(os.path.join(inner, file) for inner, _, names in os.walk(folder) for file in names)
        images = [file for file in found if file.lower().endswith(IMAGE_SUFFIXES)]
        skipped += len(found) - len(images)
        if images:
            classes[name] = images
    if skipped:
        logger.warning("data.%s %s: skipped %d files that are not images in a class folder", key, path, skipped)
    return classes


def _probed(classes):
    # each class's first image, and the first class's first few
    first = next(iter(classes.values()))
    return list(dict.fromkeys(first[:PROBE_ROWS] + [images[0] for images in classes.values()]))


def _probe(path):
    # an image's mode ("L" or "RGB") and (height, width), decoded whole
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return ("L" if image.mode in _GREY_MODES else "RGB"), (image.height, image.width)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise SourceError(f"{path}: cannot decode as an image: {error}") from None
