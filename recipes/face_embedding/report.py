"""Tables, references and pictures, built from what evaluate.py returns."""

from __future__ import annotations

from common import intervals

import numpy as np

REFERENCES = {
    "att_faces": [
        {"name": "eigenfaces (AT&T, 5 training images per person)",
         "metric": "identification_error", "value": 0.105, "source": "Lawrence et al. 1997"},
        {"name": "SOM + CNN (AT&T, 5 training images per person)",
         "metric": "identification_error", "value": 0.038, "source": "Lawrence et al. 1997"},
    ],
    "yale": [
        {"name": f"{method} 1-NN at 40x30 (this copy of Yale, first 5 per person train)",
         "metric": "identification_error", "value": value,
         "source": "../shared/data/README.md (measured on the development copy)"}
        for method, value in (("raw pixels", 0.112), ("eigenfaces", 0.112),
                              # Measured in LDA's whitened coordinates: see
                              # evaluate.fisherfaces for why the recipe's is not.
                              ("Fisherfaces in LDA's whitened coordinates", 0.213))
    ] + [{"name": "Fisherfaces, cropped and aligned Yale, leave-one-out (best variant)",
          "metric": "identification_error", "value": 0.006,
          "source": "Belhumeur, Hespanha & Kriegman 1997"}],
    "unseen_identities": [
        {"name": "chance (half the pairs are the same person)",
         "metric": "verification_accuracy", "value": 0.5, "source": "by construction"}],
    "lfw": [{"name": "FaceNet on LFW's 6000-pair protocol (260M training images; not this "
             "protocol)", "metric": "verification_accuracy", "value": 0.9963,
             "source": "Schroff et al. 2015"}],
}


SOURCES = {
    "yale": "The Yale Face Database (Belhumeur, Hespanha & Kriegman 1997), 15 people x 11 "
            "conditions, 320x243 grey GIF, uncropped; the development copy lacks "
            "subject01.centerlight (164 images); free for research use with acknowledgement",
    "att_faces": "The AT&T (ORL) Database of Faces (AT&T Laboratories Cambridge), 40 people x "
                 "10 images, 92x112 grey PGM, layout s1/1.pgm ... s40/10.pgm",
    "olivetti": "The AT&T (ORL) Database of Faces (AT&T Laboratories Cambridge) as "
                "scikit-learn's Olivetti copy, 40 people x 10 images, 64x64 grey",
    "synthetic": "procedurally generated synthetic identities (synthetic.py), offline",
}
# The published identification errors of a face set hold for its first 5 images per
# person training, the other ones testing (Olivetti is the AT&T set, resized).
FIRST_FIVE = {"att_faces": "att_faces", "olivetti": "att_faces", "yale": "yale"}


def source(collection: str | None, dataset: str) -> str:
    """Where the data of this run came from, for the record; `collection` is
    `data.collection`'s."""
    known = SOURCES.get(collection, "")
    return f"{known}; --dataset={dataset}" if known else f"--dataset={dataset}"


def references(collection: str | None, protocol: str) -> list:
    """The published numbers this run is compared with: those of its face set
    (`data.collection`) under its protocol."""
    chosen = []
    if protocol == "per_identity:5" and collection in FIRST_FIVE:
        chosen += REFERENCES[FIRST_FIVE[collection]]
    if protocol == "unseen_identities":
        chosen += REFERENCES["unseen_identities"]
    if collection == "lfw":
        chosen += REFERENCES["lfw"]
    return chosen


def tables(protocol: str, network_name: str, metrics: dict, baselines: dict,
           splits: list[dict], labels: np.ndarray) -> dict:
    """The protocol's table (network and every baseline) and the data table."""
    headline = [m for m in ("identification_error", "verification_accuracy", "roc_auc",
                            "recall_at_1") if m in metrics]

    def row(name, values):
        return [name] + [str(values[m]) if isinstance(values[m], intervals.Interval)
                         else values[m] for m in headline]

    rows = [row(network_name, metrics)] + [row(name, values) for name, values in
                                           baselines.items()]
    data_rows = []
    for number, fold in enumerate(splits, start=1):
        for split, index in fold.items():
            data_rows.append([number, split, len(index), len(np.unique(labels[index]))])
    return {protocol: {"columns": ["embedding"] + headline, "rows": rows},
            "data": {"columns": ["fold", "split", "images", "people"], "rows": data_rows}}


def pictures(directory, faces, folds: list[dict], embeddings: list, details: dict) -> list:
    """projection.png (test embeddings beside the pixels' eigenface projection) and
    mistakes.png (the hardest mistakes); `details` is evaluate.network's. Paths."""
    test = folds[-1]["test"]
    projection, grid = directory / "projection.png", directory / "mistakes.png"
    plot_projection({"triplet embedding": embeddings[-1][test],
                     "pixels (eigenface projection)": faces.images[test].reshape(len(test), -1)},
                    faces.labels[test], faces.names, projection)
    if "folds" in details:
        rows = [row for fold, result in zip(folds, details["folds"])
                for row in mistakes(faces.names, faces.labels, fold["test"], fold["train"],
                                    result)][:16]
        title = "misidentified test images (left) beside their nearest training image (right)"
    else:
        rows = verification_mistakes(test, details, details["threshold"])
        title = ("hardest mistakes on unseen people: closest different-person pairs "
                 "accepted, farthest same-person pairs rejected")
    plot_mistakes(faces.images, rows, grid, title)
    return [projection, grid]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_projection(panels: dict, labels, names, path, max_identities: int = 12) -> None:
    """Side by side, 2-D PCA projections of embeddings ({title: [N, D]}) of the first
    `max_identities` people in `labels`, coloured by person."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
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
        axis.set_title(f"{title}: {len(shown)} test people", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, -1].legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def mistakes(names, labels, test, train, result) -> list:
    """Rows (test image, nearest training image, caption) of the 16 misidentified test
    images; `result` is evaluate.identification's."""
    rows = []
    for i in np.flatnonzero(result["wrong"])[:16]:
        found = train[result["nearest"][i]]
        rows.append((test[i], found, f"{names[labels[test[i]]]} as {names[labels[found]]}"))
    return rows


def verification_mistakes(test, details, threshold) -> list:
    """Rows of the 8 closest different-person pairs accepted and the 8 farthest
    same-person pairs rejected; `details` is evaluate.verification's."""
    wrong = np.flatnonzero(details["accepted"] != details["same"])
    order = wrong[np.argsort(details["distances"][wrong])]
    accepted = [i for i in order if not details["same"][i]][:8]
    rejected = [i for i in order[::-1] if details["same"][i]][:8]
    return [(test[details["first"][i]], test[details["second"][i]],
             f"{'same, rejected' if details['same'][i] else 'different, accepted'} "
             f"d={details['distances'][i]:.2f} (threshold {threshold:.2f})")
            for i in accepted + rejected]


def plot_mistakes(images, rows, path, title="") -> None:
    """A grid of image pairs; `rows` is [(left index, right index, caption)]."""
    plt = _pyplot()
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
    figure.suptitle(title if rows else "no mistakes", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
