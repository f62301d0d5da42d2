"""Face images by identity: the loaders (`load`) and the P x K training stream (`stream`).

`load` gives `Faces`: images `[N, H, W, C]` float32 in [0, 1] at the input size, labels
`[N]`, and the images at the data's own size (`*_native` baselines). `--dataset`:
  synthetic      procedural identities (synthetic.py), offline, the default
  folder:PATH    AT&T layout `s1/1.pgm`, LFW layout `Name/Name_0001.jpg` (one folder per
                 person), or Yale's flat `subject01.glasses` (person = the name before
                 the first dot); any image Pillow reads; natural sort order
  olivetti, lfw  scikit-learn's cached copies in --data_dir (never downloaded)
Sizes are (width, height), as the face literature writes them (AT&T 92x112). The
protocols' splits are in protocols.py, the augmentation in augment.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from common import checks
from common.stream import epoch_stream

import numpy as np
import tensorflow as tf
from PIL import Image

from recipes.face_embedding import augment, synthetic

SYNTHETIC_PEOPLE = (800, 12)  # synthetic: people, images each
SYNTHETIC_SIZE = (32, 32)  # synthetic's size without --image_size
LFW_MIN_IMAGES = 10  # lfw: people with at least 10 images
LARGEST_NATIVE_SIDE = 128  # data up to this size trains at its own size ...
DEFAULT_LONG_SIDE = 64  # ... larger data is resized (aspect kept) to this longer side
ASPECT_TOLERANCE = 0.02  # Yale's 320x243 resized to 40x30 as published (1.2 % off)


@dataclasses.dataclass
class Faces:
    images: np.ndarray  # [N, H, W, C] float32 in [0, 1], the network's input size
    labels: np.ndarray  # [N] int32 in 0..len(names)-1, grouped by person, files in order
    names: list  # identity names, indexed by label
    places: list  # where each identity's images are (folder, or PATH/prefix.*)
    native: np.ndarray  # [N, h, w, C] float32 at the data's own size (or `images`)
    name: str  # the dataset


def _natural(text: str):
    """Sort key that puts 2.pgm before 10.pgm."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect ratio of `size` (width, height) unless within 2 %, then
    resize (bilinear, antialiased when shrinking): never squashes a face."""
    width, height = image.size
    if abs(width / height - size[0] / size[1]) > ASPECT_TOLERANCE * size[0] / size[1]:
        if width * size[1] > height * size[0]:  # too wide
            keep = round(height * size[0] / size[1])
            image = image.crop(((width - keep) // 2, 0, (width - keep) // 2 + keep, height))
        else:
            keep = round(width * size[1] / size[0])
            image = image.crop((0, (height - keep) // 2, width, (height - keep) // 2 + keep))
    return image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)


def _array(image: Image.Image) -> np.ndarray:
    """[H, W, C] float32 in [0, 1]."""
    return (np.asarray(image, np.float32) / 255.0).reshape(image.size[1], image.size[0], -1)


def input_size(native: tuple[int, int], requested: tuple[int, int] | None) -> tuple[int, int]:
    """The requested size, else the data's own while small, else a longer side of 64."""
    if requested or max(native) <= LARGEST_NATIVE_SIDE:
        return requested or native
    return tuple(max(1, round(side * DEFAULT_LONG_SIDE / max(native))) for side in native)


def _people(root: Path) -> list[tuple[str, str, list[Path]]]:
    """[(person, place, files)]: one folder per person, else Yale's flat person.condition."""
    def visible(folder, directories):
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")
                       and p.is_dir() == directories), key=lambda p: _natural(p.name))

    if visible(root, True):  # AT&T / LFW; files beside the folders (a README) are not faces
        return [(d.name, str(d), visible(d, False)) for d in visible(root, True)]
    groups: dict[str, list[Path]] = {}
    for file in visible(root, False):
        if "." in file.name and not file.name.lower().startswith("readme"):
            groups.setdefault(file.name.split(".", 1)[0], []).append(file)
    return [(person, str(root / f"{person}.*"), files) for person, files in groups.items()]


def load_folder(path: str, size: tuple[int, int] | None, color: bool = False,
                min_images: int | None = None) -> Faces:
    """Every image under `path`; people with fewer than `min_images` are dropped."""
    root = checks.directory(path, "--dataset=folder")
    people = [p for p in _people(root) if p[2] and len(p[2]) >= (min_images or 1)]
    if not people:
        raise ValueError(f"--dataset=folder:{path}: no face images found (expected one folder "
                         "per person, s1/1.pgm or Name/Name_0001.jpg, or flat files named "
                         "person.condition as Yale's subject01.glasses)")
    native, labels, names, places = [], [], [], []
    for person, place, files in people:
        for file in files:
            try:
                with Image.open(file) as image:
                    native.append(image.convert("RGB" if color else "L"))
            except OSError as error:  # PIL.UnidentifiedImageError, truncated files
                raise ValueError(f"cannot read image {file}: {error}") from error
            labels.append(len(names))
        names.append(person)
        places.append(place)
    return _faces(native, labels, names, places, size, f"folder:{root.name}")


def _faces(native: list, labels, names, places, size, name: str) -> Faces:
    """Faces from Pillow images: at the input size, and at the data's own (the most
    common size among them)."""
    sizes = [image.size for image in native]
    own = max(set(sizes), key=sizes.count)
    target = input_size(own, size)
    images = np.stack([_array(_fit(image, target)) for image in native])
    own_images = images if target == own else np.stack([_array(_fit(i, own)) for i in native])
    return Faces(images, np.asarray(labels, np.int32), list(names), places, own_images, name)


def load_scikit_learn(dataset: str, data_dir: str | None, size, color: bool = False,
                      min_images: int | None = None) -> Faces:
    """scikit-learn's cached copy, never downloaded: olivetti (AT&T, 40 x 10 at 64x64)
    or lfw (funneled, people with at least `min_images`, default LFW_MIN_IMAGES)."""
    bunch = _fetch(dataset, data_dir, color, min_images or LFW_MIN_IMAGES)
    names = getattr(bunch, "target_names", [f"s{i + 1}" for i in range(bunch.target.max() + 1)])
    order = np.argsort(bunch.target, kind="stable")  # grouped by person
    scale = 255 if bunch.images.max() <= 1 else 1  # floats in [0, 1] (Olivetti) or [0, 255]
    pixels = np.round(np.clip(bunch.images[order] * scale, 0, 255)).astype(np.uint8)
    if color and pixels.ndim == 3:  # Olivetti is grey only
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return _faces([Image.fromarray(p) for p in pixels], bunch.target[order], list(names),
                  [dataset] * len(names), size, dataset)


def _fetch(dataset: str, data_dir: str | None, color: bool, min_images: int):
    """scikit-learn's bunch of `dataset` from its cache in `data_dir`."""
    from sklearn import datasets

    try:
        if dataset == "olivetti":
            return datasets.fetch_olivetti_faces(data_home=data_dir, download_if_missing=False)
        return datasets.fetch_lfw_people(data_home=data_dir, funneled=True, color=color,
                                         download_if_missing=False,
                                         min_faces_per_person=min_images)
    except OSError as error:
        what = "olivetti_py3.pkz" if dataset == "olivetti" else "lfw_home/ (lfw_funneled/ ...)"
        raise FileNotFoundError(f"--dataset={dataset}: {what} is not in "
                                f"{datasets.get_data_home(data_dir)} and this loader does not "
                                "download; pass --data_dir or use folder:PATH") from error


def load_synthetic(people: int, images_per_identity: int, size: tuple[int, int] | None,
                   color: bool, seed: int) -> Faces:
    """`people` procedural identities (synthetic.py) x `images_per_identity`, rendered at
    the input size (which is then also their own)."""
    pixels, labels = synthetic.render(people, images_per_identity, size or SYNTHETIC_SIZE,
                                      seed)
    pixels = np.repeat(pixels[..., None], 3 if color else 1, axis=-1)
    return Faces(pixels, labels, [f"id{i:03d}" for i in range(people)],
                 ["synthetic"] * people, pixels, "synthetic")


def load(dataset: str, data_dir: str | None, size: tuple[int, int] | None,
         color: bool = False, seed: int = 0, min_images: int | None = None,
         first_images: int | None = None,
         synthetic_people: tuple[int, int] = SYNTHETIC_PEOPLE) -> Faces:
    """The faces of `--dataset`, read and checked in full; `first_images` keeps each
    person's first N images. `synthetic_people`: (people, images each) of synthetic."""
    if not dataset:  # a real-data preset names no data: never fall back to synthetic
        raise ValueError("--dataset is empty: this config trains on real faces: pass "
                         "--dataset=folder:PATH (recipes/face_embedding/README.md says where "
                         "to get them)")
    if dataset == "synthetic":
        faces = load_synthetic(*synthetic_people, size, color, seed)
    elif dataset in ("olivetti", "lfw"):
        faces = load_scikit_learn(dataset, data_dir, size, color, min_images)
    else:
        faces = load_folder(dataset.split(":", 1)[1], size, color, min_images)
    if first_images:
        faces = subset(faces, positions(faces.labels) < first_images)
    return faces


def collection(faces: Faces) -> str | None:
    """Which known face set `faces` is, told by the data itself (never by a preset's
    name): "synthetic", "olivetti", "lfw", "att_faces" (40 people of 10 images at
    92x112), "yale" (Yale's flat layout: 15 people at 320x243), else None."""
    if faces.name in ("synthetic", "olivetti", "lfw"):
        return faces.name
    height, width = faces.native.shape[1:3]
    counts = np.bincount(faces.labels)
    if (width, height) == (92, 112) and len(counts) == 40 and (counts == 10).all():
        return "att_faces"
    flat = all(place.endswith(".*") for place in faces.places)
    if (width, height) == (320, 243) and len(counts) == 15 and flat:
        return "yale"
    return None


def subset(faces: Faces, keep: np.ndarray) -> Faces:
    """The images where `keep` [N] is true, identities renumbered in order."""
    kept, labels = np.unique(faces.labels[keep], return_inverse=True)
    images = faces.images[keep]
    native = images if faces.native is faces.images else faces.native[keep]
    return Faces(images, labels.astype(np.int32), [faces.names[i] for i in kept],
                 [faces.places[i] for i in kept], native, faces.name)


def first_people(faces: Faces, people: int) -> Faces:
    """The images of the first `people` people (--smoke's real data, once checked)."""
    return subset(faces, faces.labels < people)


def positions(labels: np.ndarray) -> np.ndarray:
    """[N] the index of each image among its person's images (0 = the first), in order."""
    seen = np.zeros(labels.max() + 1 if len(labels) else 0, int)
    position = np.empty(len(labels), int)
    for index, label in enumerate(labels):
        position[index] = seen[label]
        seen[label] += 1
    return position


def batch_shape(labels: np.ndarray, folds: list[dict], global_batch_size: int,
                images_per_identity: int, replicas: int) -> tuple[int, int]:
    """(P, K) of batches that fit small data: P at most every training person (a
    multiple of the replicas), K at most the fewest training images of a person."""
    if global_batch_size % images_per_identity:
        raise ValueError(f"--global_batch_size={global_batch_size} is not a multiple of "
                         f"--images_per_identity={images_per_identity} (P x K batches)")
    counts = [np.unique(labels[fold["train"]], return_counts=True)[1] for fold in folds]
    k = min(images_per_identity, *(count.min() for count in counts))
    p = min(global_batch_size // images_per_identity, *(len(count) for count in counts))
    if p < replicas:
        raise ValueError(f"{p} training people do not split over {replicas} replicas (each "
                         "replica's slice of a batch holds whole people)")
    return p // replicas * replicas, k


def stream(images: np.ndarray, labels: np.ndarray, identities_per_batch: int,
           images_per_identity: int, seed: int, steps_per_epoch: int, augmented: bool):
    """The `stream=` function of training.fit: first_epoch -> (endless P x K batches,
    steps_per_epoch). A batch is (images [P*K, H, W, C], labels [P*K]).

    Step g draws P distinct people, K distinct images of each and their augmentation
    from the stateless seed (seed, g): epoch e depends only on (seed, e), so a resumed
    run sees what an uninterrupted one would. A person's K images are contiguous: R
    replicas with P % R == 0 each get P/R whole people.
    """
    p, k = identities_per_batch, images_per_identity
    ids, counts = np.unique(labels, return_counts=True)
    if p > len(ids) or k > counts.min():
        raise ValueError(f"{p} x {k} batches need {p} people with {k} images each; the "
                         f"training split has {len(ids)}, the fewest images {counts.min()}")
    table = np.full((len(ids), counts.max()), -1, np.int64)  # image indices of each person
    for row, identity in enumerate(ids):
        table[row, :counts[row]] = np.flatnonzero(labels == identity)
    table, counts = tf.constant(table), tf.constant(counts, tf.int32)
    images, labels = tf.constant(images), tf.constant(labels)

    def batch(step):
        keys = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), step]), 3)
        chosen = tf.argsort(tf.random.stateless_uniform([len(ids)], keys[0]))[:p]
        noise = tf.random.stateless_uniform([p, table.shape[1]], keys[1])
        valid = tf.range(table.shape[1])[None, :] < tf.gather(counts, chosen)[:, None]
        pick = tf.argsort(tf.where(valid, noise, 2.0), axis=1)[:, :k]
        index = tf.reshape(tf.gather(tf.gather(table, chosen), pick, batch_dims=1), [p * k])
        chosen_images = tf.gather(images, index)
        if augmented:
            chosen_images = augment.faces(chosen_images, keys[2])
        return chosen_images, tf.gather(labels, index)

    def steps(epoch):  # the global step numbers of `epoch`: [steps_per_epoch]
        return tf.range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)

    return epoch_stream(steps, steps_per_epoch, batch)
