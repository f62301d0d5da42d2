"""Face images by identity: the loaders, the protocols' splits and the P x K stream.

`load` gives `Faces`: images `[N, H, W, C]` float32 in [0, 1] at the input size, labels
`[N]`, and the images at the data's own size (`*_native` baselines). `--dataset`:
  synthetic      procedural identities (synthetic.py), offline, the default
  folder:PATH    AT&T layout `s1/1.pgm`, LFW layout `Name/Name_0001.jpg` (one folder per
                 person), or Yale's flat `subject01.glasses` (person = the name before
                 the first dot); any image Pillow reads; natural sort order
  olivetti, lfw  scikit-learn's cached copies in --data_dir (never downloaded)
Sizes are (width, height), as the face literature writes them (AT&T 92x112).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from common import checks
from recipes.face_embedding import synthetic

SYNTHETIC = {"identities": 800, "images_per_identity": 12, "size": (32, 32)}
SYNTHETIC_SMOKE = {"identities": 64, "images_per_identity": 6}
SMOKE_IDENTITIES, LFW_MIN_IMAGES = 10, 10  # --smoke: 10 people; LFW: people with 10 images
LARGEST_NATIVE_SIDE = 128  # data up to this size trains at its own size ...
DEFAULT_LONG_SIDE = 64  # ... larger data is resized (aspect kept) to this longer side
ASPECT_TOLERANCE = 0.02  # Yale's 320x243 resized to 40x30 as published (1.2 % off)
AUGMENT = {"crop": 0.15, "flip": 0.5, "brightness": 0.1, "contrast": 0.2, "lighting": 0.8}


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
    from sklearn import datasets

    try:
        bunch = (datasets.fetch_olivetti_faces(data_home=data_dir, download_if_missing=False)
                 if dataset == "olivetti" else datasets.fetch_lfw_people(
                     data_home=data_dir, funneled=True, color=color, download_if_missing=False,
                     min_faces_per_person=min_images or LFW_MIN_IMAGES))
    except OSError as error:
        what = {"olivetti": "olivetti_py3.pkz"}.get(dataset, "lfw_home/ (lfw_funneled/ ...)")
        raise FileNotFoundError(f"--dataset={dataset}: {what} is not in "
                                f"{datasets.get_data_home(data_dir)} and this loader does not "
                                "download; pass --data_dir or use folder:PATH") from error
    names = getattr(bunch, "target_names", [f"s{i + 1}" for i in range(bunch.target.max() + 1)])
    order = np.argsort(bunch.target, kind="stable")  # grouped by person
    pixels = np.round(np.clip(bunch.images[order] * (255 if bunch.images.max() <= 1 else 1),
                              0, 255)).astype(np.uint8)
    pixels = np.repeat(pixels[..., None], 3, axis=-1) if color and pixels.ndim == 3 else pixels
    return _faces([Image.fromarray(p) for p in pixels], bunch.target[order], list(names),
                  [dataset] * len(names), size, dataset)


def load(dataset: str, data_dir: str | None, size: tuple[int, int] | None,
         color: bool = False, seed: int = 0, min_images: int | None = None,
         first_images: int | None = None, smoke: bool = False) -> Faces:
    """Dispatches on `--dataset`; `first_images` keeps each person's first N images.
    `smoke` renders the small synthetic set (real data shrinks after validation)."""
    if dataset == "synthetic":
        sizes = SYNTHETIC_SMOKE if smoke else SYNTHETIC
        count, per_identity = sizes["identities"], sizes["images_per_identity"]
        pixels, labels = synthetic.render(count, per_identity, size or SYNTHETIC["size"], seed)
        pixels = np.repeat(pixels[..., None], 3 if color else 1, axis=-1)
        faces = Faces(pixels, labels, [f"id{i:03d}" for i in range(count)],
                      ["synthetic"] * count, pixels, "synthetic")
    elif dataset in ("olivetti", "lfw"):
        faces = load_scikit_learn(dataset, data_dir, size, color, min_images)
    else:
        faces = load_folder(dataset.split(":", 1)[1], size, color, min_images)
    if first_images:
        faces = subset(faces, positions(faces.labels) < first_images)
    return faces


def subset(faces: Faces, keep: np.ndarray) -> Faces:
    """The images where `keep` [N] is true, identities renumbered in order."""
    kept, labels = np.unique(faces.labels[keep], return_inverse=True)
    images = faces.images[keep]
    native = images if faces.native is faces.images else faces.native[keep]
    return Faces(images, labels.astype(np.int32), [faces.names[i] for i in kept],
                 [faces.places[i] for i in kept], native, faces.name)


def smoke_subset(faces: Faces) -> Faces:
    """After validation, real data shrinks to its first 10 people."""
    return subset(faces, faces.labels < SMOKE_IDENTITIES)


def positions(labels: np.ndarray) -> np.ndarray:
    """[N] the index of each image among its person's images (0 = the first)."""
    return np.array([np.sum(labels[:i] == label) for i, label in enumerate(labels)], int)


def splits(faces: Faces, protocol: str, seed: int) -> list[dict]:
    """The folds [{"train": indices, "test": indices (, "val")}] of per_identity:K (the
    first K of each person train), kfold:N (image i of a person in fold i mod N) or
    unseen_identities (people 60/10/30 % train / val / test). A person with too few
    images for the protocol is an error naming where they are."""
    counts = np.bincount(faces.labels, minlength=len(faces.names))
    kind, _, number = protocol.partition(":")
    need = {"per_identity": int(number or 0) + 1, "kfold": 2, "unseen_identities": 2}[kind]
    if len(faces.names) < (5 if kind == "unseen_identities" else 2):
        raise ValueError(f"{faces.name}: {len(faces.names)} people, too few for "
                         f"--protocol={protocol}")
    for identity in np.flatnonzero(counts < need)[:1]:
        raise ValueError(f"{faces.places[identity]}: {counts[identity]} image(s), but "
                         f"--protocol={protocol} needs at least {need} per person (drop it "
                         "with --min_images_per_identity)")
    position = positions(faces.labels)
    if kind == "per_identity":
        return [{"train": np.flatnonzero(position < int(number)),
                 "test": np.flatnonzero(position >= int(number))}]
    if kind == "kfold":
        fold = position % int(number)
        return [{"train": np.flatnonzero(fold != f), "test": np.flatnonzero(fold == f)}
                for f in range(int(number))]
    people = np.random.default_rng([seed, 7]).permutation(len(faces.names))
    num_test, num_val = max(2, round(0.3 * len(people))), max(2, round(0.1 * len(people)))
    groups = {"train": people[num_test + num_val:], "val": people[num_test:num_test + num_val],
              "test": people[:num_test]}
    return [{split: np.flatnonzero(np.isin(faces.labels, ids)) for split, ids in groups.items()}]


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


def pk_stream(images: np.ndarray, labels: np.ndarray, identities_per_batch: int,
              images_per_identity: int, seed: int, steps_per_epoch: int, augment: bool):
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
        if augment:
            chosen_images = augment_faces(chosen_images, keys[2])
        return chosen_images, tf.gather(labels, index)

    def stream(first_epoch: int):
        steps = tf.data.Dataset.range(first_epoch * steps_per_epoch, 1 << 62)
        return steps.map(batch).prefetch(tf.data.AUTOTUNE), steps_per_epoch

    return stream


def augment_faces(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """Random faces [B, H, W, C] -> [B, H, W, C]: a crop inside each image (up to
    AUGMENT["crop"] smaller: a shift and a zoom) resized back, a horizontal flip, then
    contrast, brightness and a light gradient from left to right (side lighting: the
    network standardises each image, so only the gradient survives of the three)."""
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    keys = tf.random.experimental.stateless_split(key, 7)

    def uniform(number, low=0.0, high=1.0, shape=(1, 1, 1)):
        return tf.random.stateless_uniform([n, *shape], keys[number], low, high)

    side = 1.0 - AUGMENT["crop"] * uniform(0, shape=())
    top, left = (1.0 - side) * uniform(1, shape=()), (1.0 - side) * uniform(2, shape=())
    flip = uniform(3, shape=()) < AUGMENT["flip"]
    # crop_and_resize mirrors a box whose x1 > x2: the flip costs nothing.
    x1, x2 = tf.where(flip, left + side, left), tf.where(flip, left, left + side)
    boxes = tf.stack([top, x1, top + side, x2], axis=1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(n), [height, width])
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = (out - mean) * (1.0 + AUGMENT["contrast"] * uniform(4, -1.0, 1.0)) + mean
    out += AUGMENT["brightness"] * uniform(5, -1.0, 1.0)
    ramp = tf.reshape(tf.linspace(-1.0, 1.0, width), [1, 1, width, 1])
    out *= 1.0 + AUGMENT["lighting"] * uniform(6, -1.0, 1.0) * ramp
    return tf.clip_by_value(out, 0.0, 1.0)
