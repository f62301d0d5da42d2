"""Data: the NYUv2 labelled set, your own .npz, and the checks every source passes.

The default data, procedurally rendered rooms, comes from `scenes.synthetic`.

Every source returns NumPy arrays
  images  [N, H, W, 3] uint8
  depths  [N, H, W]    float32 metres; 0 marks an invalid pixel (masked in loss and metrics)
  labels  [N, H, W]    int32 class ids in [0, num_classes); -1 marks an unlabelled pixel
checked by `validate`, which names the array and the problem when something is off.
"""

from __future__ import annotations

import os

import numpy as np

NYU13_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                 "picture", "sofa", "table", "tv", "wall", "window")
# NYU-40 (Gupta et al. 2013) -> NYU-13 (Couprie et al. 2013), 1-based, entry i is class
# i + 1 of the 40. Checked against the table of howard-mahe/nyudv2_class_mapping, which
# regenerates the `class13Mapping.mat` of ankurhanda/nyuv2-meta-data. The first stage,
# 894 raw NYU labels -> 40, is 894 numbers we do not reproduce from memory: it is read
# from the official `classMapping40.mat` (key `mapClass`) beside the labelled file.
NYU40_TO_13 = np.array([12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5,
                        7, 3, 2, 6, 11, 7, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7])


# ----------------------------------------------------------------------------------------
# NYUv2 labelled set (nyu_depth_v2_labeled.mat, MATLAB v7.3 = HDF5).

def load_nyuv2(path: str, downsample: int = 8, multiple: int = 16,
               mapping_path: str | None = None) -> dict:
    """Reads the NYUv2 labelled set and maps its 894 raw classes to the 13-class split.

    The file stores MATLAB's column-major arrays, so h5py sees them transposed:
    images [N, 3, W, H] uint8, depths [N, W, H] float metres, labels [N, W, H] with
    0 = unlabelled and 1..894 raw classes. The 894 -> 40 table is read from
    `mapping_path` (default: `classMapping40.mat` beside `path`, key `mapClass`), then
    NYU40_TO_13. Images are reduced by `downsample` (RGB averaged, depth and labels
    subsampled) and centre-cropped to a multiple of `multiple` (what the U-Net needs):
    480x640 with the default 8 gives 48x80.
    """
    import h5py
    from scipy import io as scipy_io

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dataset=nyuv2: no file {path}")
    mapping_path = mapping_path or os.path.join(os.path.dirname(path), "classMapping40.mat")
    if not os.path.isfile(mapping_path):
        raise FileNotFoundError(
            f"NYUv2 class mapping {mapping_path} not found: put the official classMapping40.mat "
            "(ankurhanda/nyuv2-meta-data, key mapClass) beside the labelled file")
    try:
        map_894_to_40 = np.asarray(scipy_io.loadmat(mapping_path)["mapClass"]).reshape(-1)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{mapping_path}: not a classMapping40.mat with key mapClass "
                         f"({error})") from error
    if (len(map_894_to_40) != 894 or map_894_to_40.min() < 1 or map_894_to_40.max() > 40
            or (map_894_to_40 != np.round(map_894_to_40)).any()):
        raise ValueError(f"{mapping_path}: mapClass must hold 894 integer ids in 1..40")
    map_894_to_40 = map_894_to_40.astype(np.int64)
    lookup = np.concatenate([[0], NYU40_TO_13[map_894_to_40 - 1]]) - 1  # 0 (unlabelled) -> -1
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in ("images", "depths", "labels") if key not in file]
            if missing:
                raise ValueError(f"{path}: missing dataset(s) {missing} (keys: {list(file)})")
            images = np.asarray(file["images"]).transpose(0, 3, 2, 1)
            depths = np.asarray(file["depths"], np.float32).transpose(0, 2, 1)
            raw = np.asarray(file["labels"]).transpose(0, 2, 1)
    except OSError as error:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 / HDF5 file ({error})") from error
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: images must be [N, 3, W, H] in the file, got "
                         f"{images.shape[::-1]}")
    if raw.size and (raw.min() < 0 or raw.max() > 894):
        raise ValueError(f"{path}: labels hold ids outside 0..894 (max {raw.max()})")
    validate(images, depths, raw, num_classes=895, source=path)
    labels = lookup[raw.astype(np.int64)].astype(np.int32)
    n, h, w = labels.shape
    hs, ws = h // downsample, w // downsample
    images = images[:, :hs * downsample, :ws * downsample].reshape(
        n, hs, downsample, ws, downsample, 3).mean((2, 4)).round().astype(np.uint8)
    offset = downsample // 2
    depths = depths[:, offset::downsample, offset::downsample][:, :hs, :ws]
    labels = labels[:, offset::downsample, offset::downsample][:, :hs, :ws]
    top, left = (hs % multiple) // 2, (ws % multiple) // 2
    crop = (slice(None), slice(top, top + hs - hs % multiple),
            slice(left, left + ws - ws % multiple))
    return {"images": images[crop], "depths": depths[crop], "labels": labels[crop]}


def load_npz(path: str) -> dict:
    """Your own data: an .npz with arrays images, depths, labels in the layout above."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dataset=npz: no file {path}")
    try:
        with np.load(path) as file:
            arrays = {key: file[key] for key in ("images", "depths", "labels")}
    except KeyError as error:
        raise ValueError(f"{path}: needs arrays images, depths and labels ({error})") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    arrays["depths"] = arrays["depths"].astype(np.float32)
    return arrays


def validate(images, depths, labels, num_classes: int, source: str) -> None:
    """Raises ValueError naming `source` and the problem: shapes, NaN depth, bad ids."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{source}: images must be [N, H, W, 3], got {images.shape}")
    if depths.shape != images.shape[:3]:
        raise ValueError(f"{source}: depths {depths.shape} and images {images.shape} "
                         "disagree in size")
    if labels.shape != images.shape[:3]:
        raise ValueError(f"{source}: labels {labels.shape} and images {images.shape} "
                         "disagree in size")
    if not np.isfinite(depths).all():
        bad = int((~np.isfinite(depths)).sum())
        raise ValueError(f"{source}: depths hold {bad} NaN/inf values (mark invalid pixels 0)")
    if (depths < 0).any():
        raise ValueError(f"{source}: depths hold negative values (mark invalid pixels 0)")
    if labels.size and (labels.min() < -1 or labels.max() >= num_classes):
        raise ValueError(f"{source}: labels hold class ids {labels.min()}..{labels.max()}, "
                         f"outside -1 (unlabelled) .. {num_classes - 1} "
                         f"(--num_classes={num_classes})")
