"""Face images by identity, the identity splits of both protocols, and P×K batches.

`load` gives `Faces`: images `[N, S, S, C]` float32 in [0, 1] (C = 1 grey, 3 colour)
and integer identity labels `[N]`. Sources (`--dataset`):
  synthetic      procedural identities (synthetic.py), offline, the default
  folder:PATH    one sub-folder per person, any image Pillow reads (AT&T `s1/1.pgm`,
                 LFW `Name/Name_0001.jpg`); files sorted in natural order
  olivetti       scikit-learn's `fetch_olivetti_faces` (the AT&T faces), cached in --data_dir
  lfw            scikit-learn's `fetch_lfw_people` (funneled), cached in --data_dir
Nothing here reads FLAGS: train.py passes the values in, and tests import this module.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from recipes.face_embedding import synthetic

SYNTHETIC = {"identities": 800, "images_per_identity": 12}
SYNTHETIC_SMOKE = {"identities": 64, "images_per_identity": 6}
LFW_MIN_IMAGES = 10  # fetch_lfw_people's min_faces_per_person unless a minimum is given


@dataclasses.dataclass
class Faces:
    images: np.ndarray  # [N, S, S, C] float32 in [0, 1]
    labels: np.ndarray  # [N] int32 in 0..len(names)-1
    names: list  # identity names, indexed by label
    name: str  # the dataset


def _natural(text: str):
    """Sort key that puts 2.pgm before 10.pgm."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _square(images: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then area-resize to [N, size, size, C]."""
    if images.ndim == 3:
        images = images[..., None]
    height, width = images.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[:, top:top + side, left:left + side]
    if side != size:
        images = tf.image.resize(images, (size, size), method="area", antialias=True).numpy()
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _channels(images: np.ndarray, color: bool) -> np.ndarray:
    return np.repeat(images, 3, axis=-1) if color and images.shape[-1] == 1 else images


def _read_image(file: Path, size: int, color: bool) -> np.ndarray:
    """One image file as [size, size, C]: centre square crop, antialiased resize."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image = image.convert("RGB" if color else "L")
            side = min(image.size)
            left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except OSError as error:  # PIL.UnidentifiedImageError and truncated files
        raise ValueError(f"cannot read image {file}: {error}") from error
    return array.reshape(size, size, -1)


def load_folder(path: str, image_size: int, color: bool = False,
                min_images: int | None = None) -> Faces:
    """One sub-folder per identity; identities with fewer than `min_images` are dropped."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset=folder:{path}: no such directory")
    people = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                    key=lambda d: _natural(d.name))
    images, labels, names = [], [], []
    for person in people:
        files = sorted((f for f in person.iterdir() if f.is_file() and not f.name.startswith(".")),
                       key=lambda f: _natural(f.name))
        if min_images and len(files) < min_images:
            continue
        for file in files:
            images.append(_read_image(file, image_size, color))
            labels.append(len(names))
        names.append(person.name)
    if not images:
        raise ValueError(f"--dataset=folder:{path}: no images in sub-folders (expected one "
                         "sub-folder per person, e.g. s1/1.pgm)")
    faces = Faces(np.stack(images), np.asarray(labels, np.int32), names, f"folder:{root.name}")
    check_identities(faces)
    return faces


def _missing(dataset: str, data_home: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"--dataset={dataset}: the data is not in {data_home} and this loader does not "
        f"download (download_if_missing=False). Put {what} there (run scikit-learn's "
        f"fetch_{'olivetti_faces' if dataset == 'olivetti' else 'lfw_people'}(data_home=...) "
        "on a machine with network and copy the files), pass --data_dir, or use "
        "--dataset=folder:PATH with one sub-folder of images per person.")


def load_olivetti(data_dir: str | None, image_size: int, color: bool = False) -> Faces:
    """The 40 × 10 AT&T / Olivetti faces (64×64 grey), in the original order."""
    from sklearn.datasets import fetch_olivetti_faces, get_data_home

    try:
        bunch = fetch_olivetti_faces(data_home=data_dir, shuffle=False, download_if_missing=False)
    except OSError as error:
        raise _missing("olivetti", get_data_home(data_dir),
                       "olivetti_py3.pkz (scikit-learn's cache of the AT&T faces)") from error
    images = _channels(_square(bunch.images, image_size), color)
    labels = bunch.target.astype(np.int32)
    return Faces(images, labels, [f"s{i + 1}" for i in range(labels.max() + 1)], "olivetti")


def load_lfw(data_dir: str | None, image_size: int, color: bool = False,
             min_images: int | None = None) -> Faces:
    """LFW funneled, people with at least `min_images` images (default LFW_MIN_IMAGES)."""
    from sklearn.datasets import fetch_lfw_people, get_data_home

    try:
        bunch = fetch_lfw_people(data_home=data_dir, funneled=True, color=color,
                                 min_faces_per_person=min_images or LFW_MIN_IMAGES,
                                 download_if_missing=False)
    except OSError as error:
        home = os.path.join(get_data_home(data_dir), "lfw_home")
        raise _missing("lfw", home, "pairsDevTrain.txt, pairsDevTest.txt, pairs.txt and "
                       "lfw-funneled.tgz (or its extracted lfw_funneled/ folder)") from error
    # Grouped by person; within a person, scikit-learn's fixed shuffle (RandomState(42)).
    order = np.argsort(bunch.target, kind="stable")
    images = _channels(_square(bunch.images[order], image_size), color)
    return Faces(images, bunch.target[order].astype(np.int32), list(bunch.target_names), "lfw")


def load(dataset: str, data_dir: str | None, image_size: int, color: bool = False,
         seed: int = 0, smoke: bool = False, min_images: int | None = None) -> Faces:
    """Dispatches on `--dataset` (see the module docstring)."""
    if dataset == "synthetic":
        sizes = SYNTHETIC_SMOKE if smoke else SYNTHETIC
        images, labels = synthetic.render(sizes["identities"], sizes["images_per_identity"],
                                          image_size, seed)
        names = [f"id{i:03d}" for i in range(sizes["identities"])]
        return Faces(_channels(images[..., None], color), labels, names, "synthetic")
    if dataset == "olivetti":
        return load_olivetti(data_dir, image_size, color)
    if dataset == "lfw":
        return load_lfw(data_dir, image_size, color, min_images)
    if dataset.startswith("folder:"):
        return load_folder(dataset.split(":", 1)[1], image_size, color, min_images)
    raise ValueError(f"--dataset={dataset}: expected synthetic, olivetti, lfw or folder:PATH")


def check_identities(faces: Faces) -> None:
    """At least 2 identities, and at least 2 images of each (else no positive pair)."""
    counts = np.bincount(faces.labels, minlength=len(faces.names))
    if len(faces.names) < 2:
        raise ValueError(f"{faces.name}: {len(faces.names)} identity found, need at least 2")
    single = [faces.names[i] for i in np.flatnonzero(counts < 2)]
    if single:
        shown = ", ".join(single[:10]) + (f" and {len(single) - 10} more" if len(single) > 10
                                          else "")
        raise ValueError(f"{faces.name}: identity {shown} has fewer than 2 images (need 2 "
                         "for a positive pair; remove it or pass --min_images_per_identity)")


def split_unseen(labels: np.ndarray, seed: int, val_fraction=0.1, test_fraction=0.3) -> dict:
    """Disjoint identities for train / val / test: {split: image indices [n]}."""
    identities = np.random.default_rng([seed, 7]).permutation(np.unique(labels))
    num_test = max(2, round(test_fraction * len(identities)))
    num_val = max(2, round(val_fraction * len(identities)))
    if len(identities) - num_test - num_val < 2:
        raise ValueError(f"{len(identities)} identities are too few for the unseen_identities "
                         f"protocol (test {num_test} + validation {num_val} + train >= 2)")
    groups = {"test": identities[:num_test], "val": identities[num_test:num_test + num_val],
              "train": identities[num_test + num_val:]}
    return {split: np.flatnonzero(np.isin(labels, ids)) for split, ids in groups.items()}


def split_per_identity(labels: np.ndarray, k: int, names: list) -> dict:
    """The first `k` images of every identity train, the rest test."""
    train, test = [], []
    for identity in np.unique(labels):
        indices = np.flatnonzero(labels == identity)
        if len(indices) <= k:
            raise ValueError(f"--protocol=per_identity:{k}: identity {names[identity]} has "
                             f"{len(indices)} images, none left to test")
        train.extend(indices[:k])
        test.extend(indices[k:])
    return {"train": np.asarray(train), "test": np.asarray(test)}


def pk_stream(images: np.ndarray, labels: np.ndarray, identities_per_batch: int,
              images_per_identity: int, seed: int, first_step: int = 0,
              names: list | None = None) -> tf.data.Dataset:
    """Endless P×K batches: (images [P*K, S, S, C], labels [P*K]).

    Step g samples P distinct identities and K distinct images of each, from a stateless
    seed (seed, g): the stream is a pure function of (seed, step), so a run resumed at
    step g sees the batches an uninterrupted run would. Each identity's K images are
    contiguous, so splitting the global batch into R equal replica slices (P % R == 0)
    gives each replica P/R whole identities: a meaningful P×K batch on its own.
    """
    p, k = identities_per_batch, images_per_identity
    ids, counts = np.unique(labels, return_counts=True)
    if p > len(ids):
        raise ValueError(f"P×K batches need P={p} identities per batch (--global_batch_size / "
                         f"--images_per_identity) but the training split has {len(ids)}")
    if k > counts.min():
        fewest = ids[counts.argmin()]
        raise ValueError(f"--images_per_identity={k} but training identity "
                         f"{names[fewest] if names else fewest} has only {counts.min()} images")
    table = np.full((len(ids), counts.max()), -1, np.int64)  # image indices of each identity
    for row, identity in enumerate(ids):
        found = np.flatnonzero(labels == identity)
        table[row, :len(found)] = found
    table, counts = tf.constant(table), tf.constant(counts)
    images, labels = tf.constant(images), tf.constant(labels)

    def batch(step):
        keys = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), step]))
        chosen = tf.argsort(tf.random.stateless_uniform([len(ids)], keys[0]))[:p]
        noise = tf.random.stateless_uniform([p, table.shape[1]], keys[1])
        valid = tf.range(table.shape[1])[None, :] < tf.cast(tf.gather(counts, chosen)[:, None],
                                                            tf.int32)
        pick = tf.argsort(tf.where(valid, noise, 2.0), axis=1)[:, :k]
        index = tf.reshape(tf.gather(tf.gather(table, chosen), pick, batch_dims=1), [p * k])
        return tf.gather(images, index), tf.gather(labels, index)

    stream = tf.data.Dataset.range(first_step, 1 << 62).map(batch)
    return stream.prefetch(tf.data.AUTOTUNE)
