"""How a protocol (`--protocol`) splits the faces into training and test images.

  unseen_identities  people 60/10/30 % train / validation / test: verification on people
                     the network never saw (the threshold is chosen on the validation people)
  per_identity:K     the first K images of each person train, the rest test (1-NN
                     identification among the training images; AT&T and Yale's protocol)
  kfold:N            image i of each person in fold i mod N; one network per fold

A fold is {"train": indices [Nt], "test": indices (, "val": indices)} into the faces.
"""

from __future__ import annotations

import numpy as np

from recipes.face_embedding import data

PATTERN = r"unseen_identities|per_identity:[1-9]\d*|kfold:([2-9]|[1-9]\d+)"
UNSEEN_FRACTIONS = {"test": 0.3, "val": 0.1}  # of the people; the rest train


def make(faces: data.Faces, protocol: str, seed: int) -> list[dict]:
    """The folds of `protocol` (see the module docstring). A person with too few images
    for the protocol is an error naming where their images are."""
    kind, _, number = protocol.partition(":")
    check(faces, protocol)
    position = data.positions(faces.labels)
    if kind == "per_identity":
        first = int(number)
        return [{"train": np.flatnonzero(position < first),
                 "test": np.flatnonzero(position >= first)}]
    if kind == "kfold":
        fold = position % int(number)
        return [{"train": np.flatnonzero(fold != f), "test": np.flatnonzero(fold == f)}
                for f in range(int(number))]
    return [unseen_identities(faces.labels, len(faces.names), seed)]


def check(faces: data.Faces, protocol: str) -> None:
    """ValueError if `faces` has too few people, or a person too few images, for
    `protocol`: per_identity:K needs K + 1 images each, the others 2."""
    kind, _, number = protocol.partition(":")
    need = int(number) + 1 if kind == "per_identity" else 2
    # unseen_identities: 2 people each to test and validation, and some to train.
    fewest_people = 5 if kind == "unseen_identities" else 2
    if len(faces.names) < fewest_people:
        raise ValueError(f"{faces.name}: {len(faces.names)} people, too few for "
                         f"--protocol={protocol}")
    counts = np.bincount(faces.labels, minlength=len(faces.names))
    short = np.flatnonzero(counts < need)
    if len(short):
        identity = short[0]
        raise ValueError(f"{faces.places[identity]}: {counts[identity]} image(s), but "
                         f"--protocol={protocol} needs at least {need} per person (drop it "
                         "with --min_images_per_identity)")


def unseen_identities(labels: np.ndarray, num_people: int, seed: int) -> dict:
    """One fold of disjoint people: at least 2 each in test and validation."""
    people = np.random.default_rng([seed, 7]).permutation(num_people)
    num_test = max(2, round(UNSEEN_FRACTIONS["test"] * num_people))
    num_val = max(2, round(UNSEEN_FRACTIONS["val"] * num_people))
    groups = {"train": people[num_test + num_val:], "val": people[num_test:num_test + num_val],
              "test": people[:num_test]}
    return {split: np.flatnonzero(np.isin(labels, ids)) for split, ids in groups.items()}
