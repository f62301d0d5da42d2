"""Face embeddings for verification, trained with a triplet loss on P×K batches.

    python recipes/face_embedding/train.py

A small CNN maps a face image to a unit-norm 128-D embedding (FaceNet's output) so that
one person's faces are close and different people's far apart. The loss is
`common.losses.TripletLoss` with online mining (`--mining`: semi_hard as FaceNet,
batch_hard, batch_all) on class-balanced batches of P identities × K images
(`--global_batch_size` = P·K, `--images_per_identity` = K). Under several replicas the
loss mines over the whole global batch (gathered), not each replica's slice.

Protocols (`--protocol`):
  unseen_identities  identities split 60/10/30 % into train / validation / test; on the
                     test identities, verification accuracy on balanced same/different
                     pairs at the distance threshold chosen on the validation identities,
                     ROC-AUC of those pairs, and recall@1 (leave-one-out nearest image).
  per_identity:K     the first K images of every identity train, the rest test: 1-NN
                     identification error against the training images (the AT&T
                     protocol with K = 5).
Baselines scored under the same protocol in the same run: raw pixels, PCA (eigenfaces
fitted on the training images), and the untrained network.
Data (`--dataset`): synthetic (default, offline), olivetti, lfw, folder:PATH (data.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from common import flags as common_flags  # noqa: E402
from common import results, training  # noqa: E402
from common.losses import TripletLoss  # noqa: E402
from recipes.face_embedding import data, evaluate, model  # noqa: E402

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS

flags.DEFINE_integer("images_per_identity", 4, "K of the P×K batches; P = "
                     "global_batch_size / K identities per batch.", lower_bound=2)
flags.DEFINE_float("margin", 0.2, "Triplet margin, in units of --distance.")
flags.DEFINE_enum("mining", "semi_hard", ["semi_hard", "batch_hard", "batch_all"],
                  "Online triplet mining inside each (global) batch.")
flags.DEFINE_enum("distance", "squared_l2", ["squared_l2", "l2", "cosine"],
                  "Distance of the triplet loss.")
flags.DEFINE_integer("embedding_dim", 128, "Embedding size (also the PCA baseline's).",
                     lower_bound=2)
flags.DEFINE_integer("width", 16, "Filters in the first convolution stage.", lower_bound=1)
flags.DEFINE_string("protocol", "unseen_identities",
                    "unseen_identities, or per_identity:K (first K images of each "
                    "identity train, the rest test).")
flags.DEFINE_integer("image_size", 32, "Images are centre-cropped square and resized to this.",
                     lower_bound=8)
flags.DEFINE_bool("color", False, "Colour (3 channels) instead of grey.")
flags.DEFINE_integer("min_images_per_identity", None, "Drop identities with fewer images "
                     f"(folder, lfw; lfw default {data.LFW_MIN_IMAGES}). Without it a folder "
                     "identity with 1 image is an error.", lower_bound=2)
flags.register_validator("margin", lambda value: value > 0, message="--margin must be > 0")
flags.register_validator(
    "protocol", lambda value: value == "unseen_identities" or (
        value.startswith("per_identity:") and value.split(":", 1)[1].isdigit()
        and int(value.split(":", 1)[1]) >= 1),
    message="--protocol must be unseen_identities or per_identity:K with K >= 1")
flags.register_validator(
    "dataset", lambda value: value in ("synthetic", "olivetti", "lfw") or (
        value.startswith("folder:") and len(value) > len("folder:")),
    message="--dataset must be synthetic, olivetti, lfw or folder:PATH")

common_flags.set_defaults(epochs=10, global_batch_size=128, learning_rate=3e-3,
                          dataset="synthetic")

SMOKE_STEPS = 6  # steps per epoch with --smoke
TOLERANCES = {"verification_accuracy": 0.02, "roc_auc": 0.015, "recall_at_1": 0.04,
              "identification_error": 0.03}
REFERENCES_ATT = [
    {"name": "eigenfaces (AT&T, 5 training images per person)",
     "metric": "identification_error", "value": 0.105, "source": "Lawrence et al. 1997"},
    {"name": "SOM + CNN (AT&T, 5 training images per person)",
     "metric": "identification_error", "value": 0.038, "source": "Lawrence et al. 1997"},
]
REFERENCE_CHANCE = {"name": "chance (half the pairs are the same person)",
                    "metric": "verification_accuracy", "value": 0.5, "source": "by construction"}
REFERENCE_FACENET = {"name": "FaceNet on LFW's 6000-pair protocol (260M training images; "
                     "not this protocol)", "metric": "verification_accuracy", "value": 0.9963,
                     "source": "Schroff et al. 2015"}


def splits(faces: data.Faces) -> dict:
    """{split: image indices} of the chosen protocol."""
    if FLAGS.protocol == "unseen_identities":
        return data.split_unseen(faces.labels, FLAGS.seed)
    return data.split_per_identity(faces.labels, int(FLAGS.protocol.split(":")[1]), faces.names)


def score(embeddings: dict, labels: dict) -> tuple[dict, dict]:
    """The protocol's metrics for one embedding of every split ({split: [N, D]})."""
    if FLAGS.protocol == "unseen_identities":
        return evaluate.unseen_identities((embeddings["val"], labels["val"]),
                                          (embeddings["test"], labels["test"]), FLAGS.seed)
    return evaluate.per_identity((embeddings["train"], labels["train"]),
                                 (embeddings["test"], labels["test"]))


def pictures(run, faces, index, embeddings, pca_embeddings, details, threshold=None) -> list:
    """The 2-D projection of test embeddings and the grid of hardest mistakes."""
    test_labels = faces.labels[index["test"]]
    projection = run.model_dir / "projection.png"
    evaluate.plot_projection({"triplet embedding": embeddings["test"],
                              "PCA (eigenfaces) baseline": pca_embeddings["test"]},
                             test_labels, faces.names, projection)
    rows = []
    if FLAGS.protocol == "unseen_identities":
        wrong = np.flatnonzero(details["accepted"] != details["same"])
        false_accepts = [i for i in wrong[np.argsort(details["distances"][wrong])]
                         if not details["same"][i]][:8]
        false_rejects = [i for i in wrong[np.argsort(-details["distances"][wrong])]
                         if details["same"][i]][:8]
        for i in false_accepts + false_rejects:
            caption = ("different, accepted" if not details["same"][i] else "same, rejected")
            rows.append((index["test"][details["first"][i]], index["test"][details["second"][i]],
                         f"{caption} d={details['distances'][i]:.2f}"))
    else:
        wrong = np.flatnonzero(~details["correct"])
        for i in wrong[np.argsort(details["distances"][wrong])][:16]:
            nearest = index["train"][details["nearest"][i]]
            rows.append((index["test"][i], nearest, f"{faces.names[faces.labels[index['test'][i]]]}"
                         f" as {faces.names[faces.labels[nearest]]}"))
    mistakes = run.model_dir / "mistakes.png"
    if FLAGS.protocol == "unseen_identities":
        title = (f"hardest mistakes on unseen identities (threshold d = {threshold:.2f}):\n"
                 "closest different-person pairs accepted, farthest same-person pairs rejected")
    else:
        title = "misidentified test images (left) beside their nearest training image (right)"
    evaluate.plot_mistakes(faces.images, rows, mistakes, title if rows else "no mistakes")
    return [projection, mistakes]


def train() -> dict:
    run = training.start(RECIPE)
    faces = data.load(FLAGS.dataset, FLAGS.data_dir, FLAGS.image_size, FLAGS.color,
                      FLAGS.seed, FLAGS.smoke, FLAGS.min_images_per_identity)
    index = splits(faces)
    labels = {split: faces.labels[ids] for split, ids in index.items()}
    k = FLAGS.images_per_identity
    if FLAGS.global_batch_size % k:
        raise ValueError(f"--global_batch_size={FLAGS.global_batch_size} is not a multiple of "
                         f"--images_per_identity={k} (P×K batches)")
    p = FLAGS.global_batch_size // k
    if p % run.num_replicas:
        raise ValueError(f"P = {p} identities per batch do not split over {run.num_replicas} "
                         "replicas; each replica's slice must hold whole identities")
    steps = SMOKE_STEPS if FLAGS.smoke else max(1, len(index["train"]) // FLAGS.global_batch_size)
    # training.training_stream shuffles examples; triplets need P×K batches, so this
    # recipe builds its own endless stream, resumed at the step its backup holds.
    done = training.saved_epoch(run)
    if done:
        print(f"[{RECIPE}] resuming after epoch {done}", flush=True)
    first_step = done * steps
    stream = data.pk_stream(faces.images[index["train"]], labels["train"], p, k, FLAGS.seed,
                            first_step, faces.names)
    print(f"[{RECIPE}] {faces.name}: {len(faces.labels)} images of {len(faces.names)} "
          f"identities, {faces.images.shape[1:]}; "
          + ", ".join(f"{split} {len(ids)} images / {len(np.unique(labels[split]))} identities"
                      for split, ids in index.items())
          + f"; batches of {p} identities x {k} images, {steps} steps per epoch", flush=True)

    with run.strategy.scope():
        network = model.build(FLAGS.image_size, faces.images.shape[-1], FLAGS.embedding_dim,
                              FLAGS.width)
        network.compile(optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
                        loss=TripletLoss(FLAGS.margin, FLAGS.mining, FLAGS.distance),
                        jit_compile=FLAGS.jit_compile)
    # The splits the protocol scores: validation (threshold) and test, or train (gallery)
    # and test.
    images = {split: faces.images[ids] for split, ids in index.items()}
    scored = {split: images[split] for split in (("val", "test") if "val" in index
                                                 else ("train", "test"))}
    untrained = {split: model.embed(network, array) for split, array in scored.items()}
    training.fit(run, network, stream, steps_per_epoch=steps,
                 epochs=min(FLAGS.epochs, 2) if FLAGS.smoke else None)

    embeddings = {split: model.embed(network, array) for split, array in scored.items()}
    metrics, details = score(embeddings, labels)
    if "threshold" in metrics:
        metrics["verification_threshold"] = metrics.pop("threshold")
    baseline_inputs = evaluate.baseline_embeddings(images["train"], scored, FLAGS.embedding_dim)
    baselines = {}
    for name, values in {**baseline_inputs, "untrained_network": untrained}.items():
        baselines[name] = score(values, labels)[0]
        baselines[name].pop("threshold", None)
    headline = [m for m in ("verification_accuracy", "roc_auc", "recall_at_1",
                            "identification_error") if m in metrics]
    key = headline[0]

    def row(name, values):
        interval = f"[{values[key + '_ci_low']:.4f}, {values[key + '_ci_high']:.4f}]"
        return [name] + [values[m] for m in headline] + [interval]

    rows = [row(f"triplet CNN ({FLAGS.mining})", metrics)]
    rows += [row(name, values) for name, values in baselines.items()]
    references = [REFERENCE_CHANCE] if FLAGS.protocol == "unseen_identities" else []
    if FLAGS.dataset == "lfw":
        references.append(REFERENCE_FACENET)
    if FLAGS.protocol == "per_identity:5" and (FLAGS.dataset == "olivetti"
                                               or FLAGS.dataset.startswith("folder:")):
        references += REFERENCES_ATT
    return training.finish(
        run,
        metrics=metrics,
        tolerances={name: TOLERANCES[name] for name in headline},
        baselines=baselines,
        references=references,
        tables={FLAGS.protocol: {"columns": ["embedding"] + headline
                                 + [f"{key} 95% CI (resampling identities)"], "rows": rows},
                "data": {"columns": ["split", "images", "identities"],
                         "rows": [[split, len(ids), len(np.unique(labels[split]))]
                                  for split, ids in index.items()]}},
        dataset={"name": faces.name, "fingerprint": results.fingerprint(faces.images, faces.labels),
                 "images": len(faces.labels), "identities": len(faces.names),
                 "image_shape": list(faces.images.shape[1:]), "protocol": FLAGS.protocol,
                 **{f"{split}_images": len(ids) for split, ids in index.items()}},
        model=network,
        artifacts=pictures(run, faces, index, embeddings, baseline_inputs["pca"], details,
                           metrics.get("verification_threshold")),
    )


def run(argv: list[str]) -> dict:
    """Parses `argv` as the command line would, trains, and returns the results record."""
    common_flags.parse(argv)
    return train()


if __name__ == "__main__":
    training.cli(train)
