"""Face embeddings for identification and verification, trained with a triplet loss.

    python recipes/face_embedding/train.py

A small CNN maps a face image to a unit-norm embedding so that one person's faces are
close and different people's far apart. The loss is `common.losses.TripletLoss` with
online mining (`--mining`) on P x K batches: P people (at most the training people) x K
images each, augmented (crops, flips, brightness, contrast). The step budget is
`--epochs` x `--steps_per_epoch`, whatever the size of the data.

Protocols (`--protocol`): unseen_identities (people split 60/10/30 %: verification on
unseen people), per_identity:K (the first K images of each person train, the rest test:
1-NN identification error), kfold:N (image i of each person in fold i mod N; one network
per fold; the record also holds the classic baselines under leave-one-out). Baselines in
every record, on the same folds: raw pixels, eigenfaces (pca), Fisherfaces, each at the
input size and at the data's own size (`*_native`), and the untrained network.
Data (`--dataset`): synthetic (default), folder:PATH, olivetti, lfw (see data.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
from absl import flags

from common import results, training
from common import flags as common_flags
from recipes.face_embedding import data, evaluate, model, report

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS

flags.DEFINE_integer("images_per_identity", 4, "K of the P x K batches; P = "
                     "global_batch_size / K people per batch (at most the training "
                     "people).")
flags.DEFINE_integer("steps_per_epoch", 50, "Training steps per epoch, whatever the data "
                     "size.")
flags.DEFINE_float("margin", 0.2, "Triplet margin, in units of --distance.")
flags.DEFINE_enum("mining", "semi_hard", ["semi_hard", "batch_hard", "batch_all"],
                  "Online triplet mining inside each (global) batch.")
flags.DEFINE_enum("distance", "squared_l2", ["squared_l2", "l2", "cosine"],
                  "Distance of the triplet loss.")
flags.DEFINE_integer("embedding_dim", 128, "Embedding size.")
flags.DEFINE_integer("width", 16, "Filters in the first convolution stage.")
flags.DEFINE_float("dropout", 0.2, "Dropout before the projection.")
flags.DEFINE_float("weight_decay", 1e-4, "L2 penalty on the kernels.")
flags.DEFINE_bool("augment", True, "Augment training faces (crops, flips, brightness, "
                  "contrast; data.AUGMENT).")
flags.DEFINE_string("protocol", "unseen_identities",
                    "unseen_identities, per_identity:K or kfold:N.")
flags.DEFINE_string("image_size", "", "WIDTHxHEIGHT of the network input, e.g. 92x112; "
                    "empty: the data's own size up to 128 pixels, else a longer side of 64. "
                    "The aspect ratio is kept (centre crop), never squashed.")
flags.DEFINE_bool("color", False, "Colour (3 channels) instead of grey.")
flags.DEFINE_integer("min_images_per_identity", None, "Drop people with fewer images "
                     f"(folder, lfw; lfw default {data.LFW_MIN_IMAGES}).")
flags.DEFINE_integer("first_images_per_identity", None, "Keep only each person's first N "
                     "images: with --protocol=kfold:N on the training images of "
                     "per_identity:N, the validation protocol used to choose a config.")
flags.DEFINE_string("init_from", None, "RUN_DIR of a finished run of this recipe (e.g. on "
                    "synthetic faces): start from its model.keras weights.")
common_flags.check_range("images_per_identity", 2, 1024)
common_flags.check_range("steps_per_epoch", 1, 10**6)
# Unit-norm embeddings are at most 4 apart in squared L2 (2 in L2 and cosine): no triplet
# can meet a larger margin, so every one would stay active for the whole run.
common_flags.check_range("margin", 0, 4, low_open=True)
common_flags.check_range("embedding_dim", 2, 4096)
common_flags.check_range("width", 1, 256)  # build() caps every stage at 256 filters
common_flags.check_range("dropout", 0, 1, high_open=True)  # 1 would drop everything
# The triplet loss is at most margin + 4: an L2 penalty weighted above 1 can only swamp it.
common_flags.check_range("weight_decay", 0, 1)
common_flags.check_range("min_images_per_identity", 1, optional=True)
common_flags.check_range("first_images_per_identity", 2, optional=True)
flags.register_validator(
    "protocol", lambda value: bool(re.fullmatch(r"unseen_identities|per_identity:[1-9]\d*"
                                                r"|kfold:([2-9]|[1-9]\d+)", value)),
    message="--protocol must be unseen_identities, per_identity:K (K >= 1) or kfold:N "
            "(N >= 2); leave-one-out is scored for the classic baselines of kfold:N records")
# Below 8 pixels the network has no stage to pool; above 1024 a face set of thousands of
# images no longer fits in memory as float32 (and no face needs it).
flags.register_validator(
    "image_size", lambda value: value == "" or bool(
        re.fullmatch(r"\d+x\d+", value)
        and all(8 <= int(side) <= 1024 for side in value.split("x"))),
    message="--image_size must be WIDTHxHEIGHT, each side in [8, 1024], e.g. 92x112, or empty")
flags.register_validator(
    "dataset", lambda value: value in ("", "synthetic", "olivetti", "lfw") or (
        value.startswith("folder:") and len(value) > len("folder:")),
    message="--dataset must be synthetic, olivetti, lfw or folder:PATH")

common_flags.set_defaults(epochs=20, global_batch_size=128, learning_rate=3e-3,
                          dataset="synthetic")
SMOKE = {"epochs": 2, "steps_per_epoch": 10}
TOLERANCES = {"verification_accuracy": 0.02, "roc_auc": 0.015, "recall_at_1": 0.04,
              "identification_error": 0.03}


def train() -> dict:
    if not FLAGS.dataset:  # a real-data config names no data: never fall back to synthetic
        raise ValueError(f"config {common_flags.settings().config} trains on real faces: pass "
                         "--dataset=folder:PATH (recipes/face_embedding/README.md says where "
                         "to get them)")
    run = training.start(RECIPE, common_flags.settings())
    # Loaded (and refused) before the data: fold after fold starts from the same weights.
    source = model.load_init(FLAGS.init_from) if FLAGS.init_from else None
    size = tuple(map(int, FLAGS.image_size.split("x"))) if FLAGS.image_size else None
    faces = data.load(FLAGS.dataset, FLAGS.data_dir, size, FLAGS.color, FLAGS.seed,
                      FLAGS.min_images_per_identity, FLAGS.first_images_per_identity,
                      smoke=FLAGS.smoke)
    data.splits(faces, FLAGS.protocol, FLAGS.seed)  # validates the full data first
    if FLAGS.smoke and faces.name != "synthetic":
        faces = data.smoke_subset(faces)
    folds = data.splits(faces, FLAGS.protocol, FLAGS.seed)
    p, k = data.batch_shape(faces.labels, folds, FLAGS.global_batch_size,
                            FLAGS.images_per_identity, run.num_replicas)
    height, width, channels = faces.images.shape[1:]
    print(f"[{RECIPE}] {faces.name}: {len(faces.labels)} images of {len(faces.names)} people, "
          f"{width}x{height}x{channels} (own size {faces.native.shape[2]}x"
          f"{faces.native.shape[1]}); {len(folds)} fold(s) of {FLAGS.protocol}; batches of "
          f"{p} people x {k} images, {FLAGS.epochs} x {FLAGS.steps_per_epoch} steps", flush=True)

    embeddings, untrained = [], []
    for number, fold in enumerate(folds, start=1):
        with run.strategy.scope():
            network = model.build((width, height), channels, FLAGS.embedding_dim, FLAGS.width,
                                  FLAGS.dropout, FLAGS.weight_decay)
            if source is not None:
                model.init_from(network, source, FLAGS.init_from)
            model.compile_triplet(network, FLAGS.margin, FLAGS.mining, FLAGS.distance,
                                  FLAGS.learning_rate, FLAGS.epochs * FLAGS.steps_per_epoch,
                                  FLAGS.jit_compile)
        untrained.append(model.embed(network, faces.images))
        stream = data.pk_stream(faces.images[fold["train"]], faces.labels[fold["train"]], p, k,
                                FLAGS.seed + number - 1, FLAGS.steps_per_epoch, FLAGS.augment)
        training.fit(run, network, stream=stream, epochs=FLAGS.epochs,
                     name=f"fold{number}" if len(folds) > 1 else "")
        embeddings.append(model.embed(network, faces.images))

    metrics, shown = evaluate.network(embeddings, faces.labels, folds, FLAGS.seed)
    baselines, difference = evaluate.all_baselines(faces, folds, untrained, FLAGS.protocol,
                                                   FLAGS.seed, shown.get("wrong"))
    metrics.update(difference)
    # The last fold's network is the run's model; serving takes images as data.py gives.
    training.save_model(run, network, serving=model.serving(network))
    sample = folds[-1]["test"][:32]
    np.savez(run.path("test_embeddings.npz"), images=faces.images[sample],
             embeddings=embeddings[-1][sample])
    pictures = report.pictures(run.model_dir, faces, folds, embeddings, shown)
    return training.finish(
        run, model=network, metrics=metrics, baselines=baselines,
        tolerances={name: TOLERANCES[name] for name in metrics if name in TOLERANCES},
        references=report.references(run.config, FLAGS.protocol, FLAGS.dataset),
        tables=report.tables(FLAGS.protocol, f"triplet CNN ({FLAGS.mining})", metrics,
                             baselines, folds, faces.labels),
        dataset={"name": faces.name, "source": report.source(run.config, FLAGS.dataset),
                 "fingerprint": results.fingerprint(faces.native, faces.labels),
                 "images": len(faces.labels), "people": len(faces.names),
                 "input_size": [width, height, channels],
                 "native_size": [faces.native.shape[2], faces.native.shape[1]],
                 "protocol": FLAGS.protocol, "identities_per_batch": p,
                 "images_per_identity": k},
        artifacts=pictures,
    )


if __name__ == "__main__":
    training.cli(train, smoke=SMOKE)
