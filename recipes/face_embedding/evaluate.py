"""The protocols' metrics and the classic baselines, with their intervals.

All in NumPy / scikit-learn on whole splits. Distances are Euclidean between the
embeddings a method produces (for the unit-norm network embeddings this orders pairs
exactly as cosine or squared L2 would). Intervals come from `common.intervals` only;
they resample *people* (one person's images are not independent, people are).
"""

from __future__ import annotations

from common import intervals

import numpy as np
from scipy.linalg import eigh
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

MAX_PAIRS = 20_000  # positive pairs kept per split (and as many negatives)
EIGENFACES = 128  # PCA components of the eigenfaces baseline (at most N - 1)
CLASSIC = ("raw_pixels", "pca", "fisherfaces")


def nearest(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[Nq] index of each query's nearest gallery row (Euclidean)."""
    return np.argmin(cdist(queries.astype(np.float64), gallery.astype(np.float64)), axis=1)


def by_person(values: np.ndarray, labels: np.ndarray, seed: int) -> intervals.Interval:
    """Mean of `values` [N] with a bootstrap interval that resamples people: the
    statistic is sum / count over the drawn people's images."""
    people = np.unique(labels, return_inverse=True)[1]
    sums = np.bincount(people, weights=np.asarray(values, np.float64))
    counts = np.bincount(people).astype(np.float64)
    return intervals.statistic(lambda s, c: float(s.sum() / c.sum()), sums, counts, seed=seed)


def identification(train, test) -> dict:
    """1-NN identification of test images among the training images.

    `train`, `test`: (embeddings [N, D], labels [N]). Returns {"wrong": [Nt] bool,
    "nearest": [Nt] gallery index}.
    """
    index = nearest(train[0], test[0])
    return {"wrong": train[1][index] != test[1], "nearest": index}


def balanced_pairs(labels: np.ndarray, seed: int, max_pairs: int = MAX_PAIRS):
    """All same-person pairs (at most `max_pairs`) and as many different-person pairs:
    (first [M], second [M], same [M] bool); chance accuracy is 0.5, as in LFW's folds."""
    rng = np.random.default_rng([seed, 11])
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    positive, negative = np.flatnonzero(same), np.flatnonzero(~same)
    count = min(len(positive), len(negative), max_pairs)
    chosen = np.concatenate([rng.choice(positive, count, replace=False),
                             rng.choice(negative, count, replace=False)])
    return first[chosen], second[chosen], same[chosen]


def best_threshold(pair_distances: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold (accept below) with the highest accuracy on these pairs."""
    order = np.argsort(pair_distances, kind="stable")
    sorted_distances, sorted_same = pair_distances[order], same[order]
    accepted_true = np.concatenate([[0], np.cumsum(sorted_same)])
    accepted = np.arange(len(order) + 1)
    correct = accepted_true + (~same).sum() - (accepted - accepted_true)
    best = int(np.argmax(correct))
    if best == 0:
        return float(sorted_distances[0]) - 1e-6
    if best == len(order):
        return float(sorted_distances[-1]) + 1e-6
    return float((sorted_distances[best - 1] + sorted_distances[best]) / 2)


def verification(val, test, seed: int) -> tuple[dict, dict]:
    """Unseen people: accuracy on balanced test pairs at the threshold chosen on the
    validation people's pairs, ROC-AUC, and recall@1 (nearest other test image)."""
    val_first, val_second, val_same = balanced_pairs(val[1], seed)
    threshold = best_threshold(np.linalg.norm(val[0][val_first] - val[0][val_second], axis=1),
                               val_same)
    first, second, same = balanced_pairs(test[1], seed + 1)
    pair_distances = np.linalg.norm(test[0][first] - test[0][second], axis=1)
    accepted = pair_distances < threshold
    table = cdist(test[0], test[0])
    np.fill_diagonal(table, np.inf)
    hits = test[1][np.argmin(table, axis=1)] == test[1]
    metrics = {
        # Pairs span two people; the interval resamples the pairs' first people.
        "verification_accuracy": by_person(accepted == same, test[1][first], seed),
        "roc_auc": float(roc_auc_score(same, -pair_distances)),
        "recall_at_1": by_person(hits, test[1], seed),
        "verification_threshold": threshold,
    }
    return metrics, {"first": first, "second": second, "same": same, "threshold": threshold,
                     "distances": pair_distances, "accepted": accepted}


def classic_features(train: np.ndarray, train_labels: np.ndarray, method: str):
    """A function flat images [N, P] -> features of `method`, fitted on `train` [Nt, P].

    raw_pixels: the pixels; pca: eigenfaces (up to EIGENFACES components); fisherfaces:
    `fisherfaces`' projection, c - 1 dimensions.
    """
    if method == "raw_pixels":
        return lambda flat: flat
    if method == "fisherfaces":
        mean, directions = fisherfaces(train, train_labels)
        return lambda flat: (flat - mean) @ directions
    components = min(EIGENFACES, len(train) - 1, train.shape[1])
    return PCA(n_components=max(1, components), random_state=0).fit(train).transform


def fisherfaces(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Belhumeur, Hespanha & Kriegman (1997): PCA of `train` [N, P] to N - c components
    (c people, `labels` [N]), then the c - 1 generalised eigenvectors of the between- and
    within-class scatter there with the largest eigenvalues. Returns (mean [P],
    W_opt [P, c - 1]); features are (x - mean) @ W_opt.

    W_opt's columns have unit length, as a projection. Not LDA's within-class whitened
    coordinates (scikit-learn's `transform`): with N - c dimensions and N - c within-class
    degrees of freedom the training scatter is nearly singular (condition ~1e7 on Yale),
    whitening multiplies its smallest directions by thousands, and there unseen images
    scatter far more than the training ones (1-NN error on Yale's first-5 split: 21 %
    whitened, 10 % projected; 88.5 % whitened on AT&T, issue 24).
    """
    classes = np.unique(labels, return_inverse=True)[1]
    count = classes.max() + 1
    components = max(1, min(len(train) - count, len(train) - 1, train.shape[1]))
    pca = PCA(n_components=components, random_state=0).fit(train)
    reduced = pca.transform(train)  # centred
    means = np.stack([reduced[classes == k].mean(axis=0) for k in range(count)])
    within = reduced - means[classes]
    between = (means.T * np.bincount(classes)) @ means
    scatter = within.T @ within
    # A ridge far below any real scatter keeps eigh's Cholesky factor defined when images
    # repeat (a person's copies give a within-class scatter of rank < N - c).
    scatter += 1e-12 * np.trace(scatter) / len(scatter) * np.eye(len(scatter))
    vectors = eigh(between, scatter)[1][:, ::-1][:, :count - 1]
    directions = pca.components_.T @ vectors
    return pca.mean_, directions / np.linalg.norm(directions, axis=0)


def network(embeddings: list, labels: np.ndarray, folds: list[dict], seed: int):
    """The protocol's metrics of one embedding per fold (`embeddings`: [[N, D]] for all
    N images). Returns (metrics, details): details are verification's pair details, or
    per fold evaluate.identification's result, with "wrong" [N_test] of all folds."""
    if "val" in folds[0]:
        fold, table = folds[0], embeddings[0]
        return verification((table[fold["val"]], labels[fold["val"]]),
                            (table[fold["test"]], labels[fold["test"]]), seed)
    parts = [identification((table[fold["train"]], labels[fold["train"]]),
                            (table[fold["test"]], labels[fold["test"]]))
             for table, fold in zip(embeddings, folds)]
    wrong = np.concatenate([part["wrong"] for part in parts])
    tested = np.concatenate([fold["test"] for fold in folds])
    return ({"identification_error": by_person(wrong, labels[tested], seed)},
            {"folds": parts, "wrong": wrong})


def classic(images: dict, labels: np.ndarray, folds: list[dict], seed: int):
    """Each classic method on each image set, scored like the network on the same folds.

    `images`: {suffix: [N, H, W, C]} ("" the input size, "_native" the data's own).
    Returns ({name: metrics}, {name: test errors [N_test] for paired differences}).
    """
    results, wrong = {}, {}
    for suffix, array in images.items():
        flat = array.reshape(len(array), -1).astype(np.float64)
        for method in CLASSIC:
            tables = [classic_features(flat[fold["train"]], labels[fold["train"]], method)(flat)
                      for fold in folds]
            results[method + suffix], details = network(tables, labels, folds, seed)
            results[method + suffix].pop("verification_threshold", None)
            if "wrong" in details:
                wrong[method + suffix] = details["wrong"]
    return results, wrong


def evaluate(embeddings: list, untrained: list, faces, folds: list[dict], protocol: str,
             seed: int) -> tuple[dict, dict, dict]:
    """The network's test metrics, every baseline's, and the details of its mistakes.

    `embeddings`, `untrained`: per fold, the trained and the untrained network's
    embeddings [N, D] of all N images. Returns (metrics, {baseline: metrics}, details):
    metrics add the paired difference of the network's error minus the best classic
    baseline's ("error_minus_<name>", identification protocols only); details are
    `network`'s.
    """
    metrics, details = network(embeddings, faces.labels, folds, seed)
    found, difference = baselines(faces, folds, untrained, protocol, seed,
                                  details.get("wrong"))
    return {**metrics, **difference}, found, details


def baselines(faces, folds: list[dict], untrained: list, protocol: str, seed: int,
              wrong: np.ndarray | None):
    """{name: metrics} of every baseline, and the paired difference of the network's
    error minus the best classic baseline's ({"error_minus_<name>": Interval} or {})."""
    same_size = faces.native is faces.images  # synthetic: rendered at the input size
    images = {"": faces.images} if same_size else {"": faces.images, "_native": faces.native}
    found, errors = classic(images, faces.labels, folds, seed)
    if same_size:
        found.update({f"{name}_native": dict(found[name]) for name in CLASSIC})
    found["untrained_network"] = network(untrained, faces.labels, folds, seed)[0]
    found["untrained_network"].pop("verification_threshold", None)
    if protocol.startswith("kfold:"):
        found.update(leave_one_out(faces.images, faces.labels, seed))
    if wrong is None or not errors:
        return found, {}
    best = min(errors, key=lambda name: errors[name].mean())
    return found, {f"error_minus_{best}": intervals.paired_difference(
        wrong.astype(float), errors[best].astype(float), seed=seed)}


def leave_one_out(images: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """The classic methods under leave-one-out (Belhumeur et al.): each image is tested
    against all the others, with the method refitted without it. {name: Interval}."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    results = {}
    for method in CLASSIC:
        wrong = np.zeros(len(flat), bool)
        for held in range(len(flat)):
            rest = np.delete(np.arange(len(flat)), held)
            features = classic_features(flat[rest], labels[rest], method)
            wrong[held] = labels[rest][nearest(features(flat[rest]),
                                               features(flat[held:held + 1]))[0]] != labels[held]
        results[f"{method}_leave_one_out"] = {"identification_error":
                                              by_person(wrong, labels, seed)}
    return results
