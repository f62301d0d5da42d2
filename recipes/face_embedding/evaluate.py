"""The two evaluation protocols, the pixel and PCA baselines, and the pictures.

All in NumPy / scikit-learn on whole splits. Distances are Euclidean between the
embeddings a method produces (for the unit-norm network embeddings this orders pairs
exactly as cosine or squared L2 would).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

MAX_PAIRS = 20_000  # positive pairs kept per split (and as many negatives)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [Na, Nb] between rows of a [Na, D] and b [Nb, D]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def balanced_pairs(labels: np.ndarray, seed: int, max_pairs: int = MAX_PAIRS):
    """All same-identity pairs (at most `max_pairs`) and as many different-identity pairs.

    Returns (first [M], second [M], same [M] bool), a fixed sample given the seed; half
    the pairs are positive, so chance accuracy is 0.5 (like LFW's 300 + 300 per fold).
    """
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
    # Accepting the first i pairs: i - (false accepts) correct among them, plus the
    # rejected negatives after them.
    accepted_true = np.concatenate([[0], np.cumsum(sorted_same)])
    accepted = np.arange(len(order) + 1)
    rejected_false = (~same).sum() - (accepted - accepted_true)
    correct = accepted_true + rejected_false
    best = int(np.argmax(correct))
    if best == 0:
        return float(sorted_distances[0]) - 1e-6
    if best == len(order):
        return float(sorted_distances[-1]) + 1e-6
    return float((sorted_distances[best - 1] + sorted_distances[best]) / 2)


def nearest_hits(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N] bool: is each image's nearest other image (leave-one-out) the same identity?
    Their mean is recall@1."""
    table = distances(embeddings, embeddings)
    np.fill_diagonal(table, np.inf)
    return labels[np.argmin(table, axis=1)] == labels


def identity_interval(correct, first_ids, second_ids, seed: int, resamples: int = 1000,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of a mean of `correct` [M] over pairs (or images), resampling
    identities: pairs of one person are not independent, people are.

    Item m involves identities first_ids[m] and second_ids[m] (equal for a same pair or
    an image). An identity drawn c times counts its own items c times and a pair of two
    drawn identities c_a·c_b times.
    """
    ids, inverse = np.unique(np.concatenate([first_ids, second_ids]), return_inverse=True)
    first, second = inverse[:len(first_ids)], inverse[len(first_ids):]
    same = first == second
    correct = np.asarray(correct, np.float64)
    rng = np.random.default_rng([seed, 13])
    means = []
    for start in range(0, resamples, 100):
        counts = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)),
                                 size=min(100, resamples - start)).astype(np.float64)
        weights = np.where(same, counts[:, first], counts[:, first] * counts[:, second])
        means.append(weights @ correct / np.maximum(weights.sum(axis=1), 1e-12))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(means), [tail, 1 - tail])
    return float(low), float(high)


def unseen_identities(val, test, seed: int) -> tuple[dict, dict]:
    """Verification and recall@1 on test identities; the threshold from val identities.

    `val`, `test`: (embeddings [N, D], labels [N]). Returns (metrics, details) where
    details holds the test pairs and their distances for the mistakes picture.
    """
    val_first, val_second, val_same = balanced_pairs(val[1], seed)
    val_distances = np.linalg.norm(val[0][val_first] - val[0][val_second], axis=1)
    threshold = best_threshold(val_distances, val_same)
    first, second, same = balanced_pairs(test[1], seed + 1)
    pair_distances = np.linalg.norm(test[0][first] - test[0][second], axis=1)
    accepted = pair_distances < threshold
    metrics = {
        "verification_accuracy": float(np.mean(accepted == same)),
        "roc_auc": float(roc_auc_score(same, -pair_distances)),
        "recall_at_1": float(np.mean(nearest_hits(*test))),
        "threshold": threshold,
    }
    labels = test[1]
    intervals = {
        "verification_accuracy": identity_interval(accepted == same, labels[first],
                                                   labels[second], seed),
        "recall_at_1": identity_interval(nearest_hits(*test), labels, labels, seed),
    }
    for name, (low, high) in intervals.items():
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
    details = {"first": first, "second": second, "same": same, "distances": pair_distances,
               "accepted": accepted}
    return metrics, details


def per_identity(train, test) -> tuple[dict, dict]:
    """1-NN identification of test images against the training images' embeddings."""
    table = distances(test[0], train[0])
    nearest = np.argmin(table, axis=1)
    correct = train[1][nearest] == test[1]
    metrics = {"identification_error": float(1.0 - correct.mean())}
    low, high = identity_interval(~correct, test[1], test[1], seed=0)
    metrics["identification_error_ci_low"], metrics["identification_error_ci_high"] = low, high
    details = {"nearest": nearest, "correct": correct, "distances": table[np.arange(len(table)),
                                                                          nearest]}
    return metrics, details


def baseline_embeddings(train_images: np.ndarray, images: dict, components: int) -> dict:
    """Raw pixels and PCA (eigenfaces fitted on the training images) of each split.

    `images`: {split: [N, S, S, C]}. Returns {"raw_pixels": {split: [N, S*S*C]},
    "pca": {split: [N, components]}}.
    """
    flat = {split: array.reshape(len(array), -1) for split, array in images.items()}
    train_flat = train_images.reshape(len(train_images), -1)
    components = min(components, train_flat.shape[0] - 1, train_flat.shape[1])
    pca = PCA(n_components=components, svd_solver="covariance_eigh").fit(train_flat)
    return {"raw_pixels": flat,
            "pca": {split: pca.transform(array) for split, array in flat.items()}}


def plot_projection(panels: dict, labels, names, path, max_identities: int = 12):
    """Side by side, 2-D PCA projections of embeddings ({title: [N, D]}) of the first
    `max_identities` identities in `labels`, coloured by identity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.unique(labels)[:max_identities]
    keep = np.isin(labels, shown)
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    colours = plt.get_cmap("tab20")
    for axis, (title, embeddings) in zip(axes[0], panels.items()):
        points = PCA(n_components=2).fit_transform(embeddings[keep])
        for number, identity in enumerate(shown):
            mask = labels[keep] == identity
            axis.scatter(points[mask, 0], points[mask, 1], s=16, color=colours(number % 20),
                         label=str(names[identity]))
        axis.set_title(f"{title}: {len(shown)} test identities", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, -1].legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_mistakes(images, rows, path, title=""):
    """A grid of image pairs; `rows` is [(left index, right index, caption)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4  # pairs per row of the grid; a narrow empty column separates pairs
    lines = max(1, -(-len(rows) // columns))
    figure, axes = plt.subplots(lines, 3 * columns - 1, squeeze=False,
                                figsize=(2.5 * columns, lines * 1.5),
                                gridspec_kw={"width_ratios": ([1, 1, 0.3] * columns)[:-1]})
    for axis in axes.ravel():
        axis.axis("off")
    grey = images.shape[-1] == 1
    for index, (left, right, caption) in enumerate(rows):
        for offset, which in enumerate((left, right)):
            axis = axes[index // columns, 3 * (index % columns) + offset]
            picture = images[which, ..., 0] if grey else images[which]
            axis.imshow(picture, cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[index // columns, 3 * (index % columns)].set_title(caption, fontsize=7, loc="left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
