"""Data: every source, the checks, the splits and the smoke subset.

Every source gives NumPy arrays
  images  [N, H, W, 3] uint8
  depths  [N, H, W]    float32 metres; 0 marks an invalid pixel (masked in loss and metrics)
  labels  [N, H, W]    int32 class ids in [0, num_classes); -1 marks an unlabelled pixel
checked by `validate`, which names the array and the problem. Sources: the rendered
rooms (`synthetic.rooms`, default), the NYUv2 labelled set (`nyuv2:PATH`), your .npz.
"""

from __future__ import annotations

from common import checks

import numpy as np
import tensorflow as tf

from recipes.depth_segmentation import synthetic

NYU13_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                 "picture", "sofa", "table", "tv", "wall", "window")
# NYU-40 (Gupta et al. 2013) -> NYU-13 (Couprie et al. 2013), 1-based, entry i is class
# i + 1 of the 40. Checked against the table of howard-mahe/nyudv2_class_mapping, which
# regenerates the `class13Mapping.mat` of ankurhanda/nyuv2-meta-data. The first stage,
# 894 raw NYU labels -> 40, is read from the official `classMapping40.mat` (key
# `mapClass`) beside the labelled file: 894 numbers we do not reproduce from memory.
NYU40_TO_13 = np.array([12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5,
                        7, 3, 2, 6, 11, 7, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7])


def load(dataset: str, *, seed: int, train_images: int, test_images: int, image_size: int,
         resolution: tuple[int, int], test_fraction: float, num_classes: int | None,
         multiple: int) -> tuple[dict, dict, str, tuple]:
    """(train arrays, test arrays, dataset name, class names), validated."""
    kind, _, path = dataset.partition(":")
    if kind == "synthetic":
        if image_size % multiple:
            raise ValueError(f"--image_size={image_size} must be a multiple of "
                             f"2**(--levels+1) = {multiple}")
        train = synthetic.rooms(train_images, image_size, seed=seed)
        test = synthetic.rooms(test_images, image_size, seed=seed + 1_000_003)
        name, classes = f"synthetic rooms {image_size}x{image_size}", synthetic.SCENE_CLASSES
    else:
        if any(size % multiple for size in resolution):
            raise ValueError(f"--resolution={resolution[0]}x{resolution[1]}: both sides "
                             f"must be multiples of 2**(--levels+1) = {multiple}")
        if kind == "nyuv2":
            arrays, official = load_nyuv2(path, resolution)
            classes = NYU13_CLASSES
        else:
            arrays, official = load_npz(path), None
            classes = tuple(f"class{i}" for i in range(int(arrays["labels"].max()) + 1))
        train, test = split(arrays, official, test_fraction, seed, path)
        name = f"{kind}:{checks.file(path).name}"
    classes = tuple(classes) + tuple(f"class{i}" for i in range(len(classes),
                                                                num_classes or 0))
    for part, arrays in (("train", train), ("test", test)):
        validate(arrays, num_classes or len(classes), f"{name} {part} split")
    return train, test, name, classes


def split(arrays: dict, official, test_fraction: float, seed: int, source: str):
    """Official (train, test) indices if given, else a seeded random split."""
    if official is not None:
        train_index, test_index = official
    else:
        order = np.random.default_rng(seed).permutation(len(arrays["images"]))
        cut = len(order) - max(1, int(round(test_fraction * len(order))))
        if cut < 1:
            raise ValueError(f"{source}: {len(order)} images cannot be split into train "
                             "and test")
        train_index, test_index = order[:cut], order[cut:]
    return ({key: value[train_index] for key, value in arrays.items()},
            {key: value[test_index] for key, value in arrays.items()})


def hold_out(train: dict, fraction: float) -> tuple[dict, dict]:
    """(fit part, validation part): the last `fraction` of the training images, for
    choosing settings without the test split."""
    cut = len(train["images"]) - max(1, int(round(fraction * len(train["images"]))))
    return ({key: value[:cut] for key, value in train.items()},
            {key: value[cut:] for key, value in train.items()})


def smoke_subset(arrays: dict, count: int) -> dict:
    """The first `count` images (--smoke on real data, after the whole file was checked)."""
    return {key: value[:count] for key, value in arrays.items()}


def as_dataset(arrays: dict) -> tf.data.Dataset:
    """Unbatched (image uint8 [H, W, 3], {"labels": [H, W], "depth": [H, W]})."""
    return tf.data.Dataset.from_tensor_slices(
        (arrays["images"], {"labels": arrays["labels"], "depth": arrays["depths"]}))


def _read_mat(path, keys: tuple, what: str) -> dict:
    """Arrays `keys` of a MATLAB file, v7.3 (HDF5, transposed as h5py sees it) or older."""
    import h5py
    from scipy import io as scipy_io

    path = checks.file(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as file:
                found = {key: np.asarray(file[key]) for key in keys if key in file}
                available = list(file)
        else:
            contents = scipy_io.loadmat(path)
            found = {key: np.asarray(contents[key]) for key in keys if key in contents}
            available = [key for key in contents if not key.startswith("__")]
    except (OSError, ValueError, TypeError, NotImplementedError,
            scipy_io.matlab.MatReadError) as error:
        raise ValueError(f"{path}: not a readable MATLAB file ({what}): "
                         f"{str(error).splitlines()[0]}") from error
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f"{path}: {what} lacks {missing} (it has {available})")
    return found


def load_nyuv2(path: str, resolution=(288, 384)) -> tuple[dict, tuple | None]:
    """The NYUv2 labelled set (nyu_depth_v2_labeled.mat, 1449 images 480x640), mapped to
    13 classes and resized to `resolution` (LibMTL's protocol: 288x384; RGB by area,
    depth and labels by nearest neighbour). In the file (MATLAB v7.3, transposed):
    images [N, 3, W, H] uint8, depths [N, W, H] metres, labels [N, W, H] 0..894
    (0 unlabelled -> -1). Beside it: `classMapping40.mat` (key mapClass, 894 ids) is
    required; `splits.mat` (trainNdxs, testNdxs, 1-based: 795 / 654) gives the official
    split when present. Returns (arrays, (train index, test index) or None).
    """
    path = checks.file(path)
    raw = _read_mat(path, ("images", "depths", "labels"), "the NYUv2 labelled set")
    images, depths, labels = (raw["images"].transpose(0, 3, 2, 1),
                              raw["depths"].astype(np.float32).transpose(0, 2, 1),
                              raw["labels"].transpose(0, 2, 1))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: images must be [N, 3, W, H] in the file, got "
                         f"{raw['images'].shape}")
    images = check_integers(images, 0, 255, f"{path}: images (RGB)").astype(np.uint8)
    labels = check_integers(labels, 0, 894, f"{path}: labels (raw NYU ids, 0 unlabelled)")
    validate({"images": images, "depths": depths, "labels": labels.astype(np.int64)}, 895,
             str(path))
    mapping_path = path.parent / "classMapping40.mat"
    if not mapping_path.is_file():
        raise ValueError(f"{mapping_path} not found: put the official classMapping40.mat "
                         "(ankurhanda/nyuv2-meta-data, key mapClass) beside the labelled file")
    map_894_to_40 = _read_mat(mapping_path, ("mapClass",), "the 894 -> 40 class mapping")
    map_894_to_40 = map_894_to_40["mapClass"].reshape(-1)
    if (len(map_894_to_40) != 894 or map_894_to_40.min() < 1 or map_894_to_40.max() > 40
            or (map_894_to_40 != np.round(map_894_to_40)).any()):
        raise ValueError(f"{mapping_path}: mapClass must hold 894 integer ids in 1..40, got "
                         f"shape {map_894_to_40.shape}")
    lookup = np.concatenate([[0], NYU40_TO_13[map_894_to_40.astype(np.int64) - 1]]) - 1
    labels = lookup[labels.astype(np.int64)].astype(np.int32)
    official = None
    splits_path = path.parent / "splits.mat"
    if splits_path.is_file():
        found = _read_mat(splits_path, ("trainNdxs", "testNdxs"), "the official split")
        official = tuple(np.asarray(found[key]).reshape(-1).astype(np.int64) - 1
                         for key in ("trainNdxs", "testNdxs"))
        if any(index.min(initial=0) < 0 or index.max(initial=0) >= len(images)
               for index in official) or not all(len(index) for index in official):
            raise ValueError(f"{splits_path}: trainNdxs/testNdxs must be 1-based indices of "
                             f"the {len(images)} images")
    height, width = resolution
    resized = tf.image.resize(images, (height, width), method="area")
    return {"images": np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8),
            "depths": _nearest(depths, resolution).astype(np.float32),
            "labels": _nearest(labels, resolution).astype(np.int32)}, official


def _nearest(maps: np.ndarray, resolution) -> np.ndarray:
    """[N, H, W] -> [N, h, w], the pixel nearest each output pixel's centre (no blending
    of depths or class ids)."""
    rows = ((np.arange(resolution[0]) + 0.5) * maps.shape[1] / resolution[0]).astype(int)
    cols = ((np.arange(resolution[1]) + 0.5) * maps.shape[2] / resolution[1]).astype(int)
    return maps[:, rows][:, :, cols]


def load_npz(path: str) -> dict:
    """Your own data: an .npz with arrays images, depths, labels in the layout above."""
    path = checks.file(path)
    try:
        with np.load(path) as file:
            arrays = {key: file[key] for key in ("images", "depths", "labels")}
    except KeyError as error:
        raise ValueError(f"{path}: needs arrays images, depths and labels ({error})") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    arrays["images"] = check_integers(arrays["images"], 0, 255,
                                      f"{path}: images (RGB)").astype(np.uint8)
    # The upper end is --num_classes or the largest id: `validate` checks it.
    arrays["labels"] = check_integers(arrays["labels"], -1, None,
                                      f"{path}: labels (-1 unlabelled)").astype(np.int32)
    arrays["depths"] = arrays["depths"].astype(np.float32)
    return arrays


def check_integers(values: np.ndarray, low: int, high: int | None, what: str) -> np.ndarray:
    """`values` if every element is an integer in low..high (high None: no upper end);
    else ValueError naming `what`, the first bad element's index and its value. Catches
    images scaled to [0, 1] or x1000 and class ids that went through a float resize."""
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers, got dtype {values.dtype}")
    if values.dtype.kind in "biu":  # a uint8 image needs no element-wise pass
        if values.size == 0 or (values.min() >= low and (high is None
                                                         or values.max() <= high)):
            return values
    # NaN fails every comparison, so it is reported here too.
    good = (values >= low) & (values == np.round(values))
    if high is not None:
        good &= values <= high
    if good.all():
        return values
    index = np.unravel_index(np.argmin(good), values.shape)
    bounds = f"{low}..{high}" if high is not None else f">= {low}"
    axes = ("image", "row", "column", "channel")[:values.ndim]
    raise ValueError(f"{what} must be integers {bounds}, found {values[index].item()!r} at "
                     f"[{', '.join(f'{a} {int(i)}' for a, i in zip(axes, index))}] "
                     f"({int((~good).sum())} such values)")


def validate(arrays: dict, num_classes: int, source: str) -> None:
    """Raises ValueError naming `source` and the problem: shapes, NaN depth, bad ids."""
    images, depths, labels = arrays["images"], arrays["depths"], arrays["labels"]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{source}: images must be [N, H, W, 3], got {images.shape}")
    # The loaders convert after checking the values; a source that skips that is a bug.
    if images.dtype != np.uint8 or labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: images must be uint8 and labels integer ids, got "
                         f"{images.dtype} and {labels.dtype}")
    if len(images) == 0:
        raise ValueError(f"{source}: no images")
    for name, values in (("depths", depths), ("labels", labels)):
        if values.shape != images.shape[:3]:
            raise ValueError(f"{source}: {name} {values.shape} and images {images.shape} "
                             "disagree in size")
    if not np.isfinite(depths).all():
        image = int(np.flatnonzero(~np.isfinite(depths).reshape(len(depths), -1).all(1))[0])
        raise ValueError(f"{source}: depths hold {int((~np.isfinite(depths)).sum())} NaN/inf "
                         f"values (first in image {image}; mark invalid pixels 0)")
    if (depths < 0).any():
        raise ValueError(f"{source}: depths hold negative values (mark invalid pixels 0)")
    if not (depths > 0).any():
        raise ValueError(f"{source}: no valid depth (every pixel is 0)")
    if labels.min() < -1 or labels.max() >= num_classes:
        raise ValueError(f"{source}: labels hold class ids {labels.min()}..{labels.max()}, "
                         f"outside -1 (unlabelled) .. {num_classes - 1} "
                         f"(--num_classes={num_classes})")
    if len(np.unique(labels[labels >= 0])) < 2:
        raise ValueError(f"{source}: labels hold fewer than two classes")
