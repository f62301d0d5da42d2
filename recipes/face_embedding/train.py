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

from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, results, training

import numpy as np

from recipes.face_embedding import data, evaluate, model, protocols, report
from recipes.face_embedding.config import Config

RECIPE = Path(__file__).resolve().parent.name  # a fork is named by its folder
TOLERANCES = {"verification_accuracy": 0.02, "roc_auc": 0.015, "recall_at_1": 0.04,
              "identification_error": 0.03}


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    # Loaded (and refused) before the data: fold after fold starts from the same weights.
    source = model.load_init(config.init_from) if config.init_from else None
    synthetic_people = config.SMOKE_SYNTHETIC if config.smoke else data.SYNTHETIC_PEOPLE
    faces = data.load(config.dataset, config.data_dir, config.input_size, config.color,
                      config.seed, config.min_images_per_identity,
                      config.first_images_per_identity, synthetic_people)
    protocols.check(faces, config.protocol)  # the full data, before --smoke shrinks it
    collection = data.collection(faces)
    if config.smoke and faces.name != "synthetic":
        faces = data.first_people(faces, config.SMOKE_IDENTITIES)
    folds = protocols.make(faces, config.protocol, config.seed)
    p, k = data.batch_shape(faces.labels, folds, config.global_batch_size,
                            config.images_per_identity, run.num_replicas)
    height, width, channels = faces.images.shape[1:]
    print(f"[{RECIPE}] {faces.name}: {len(faces.labels)} images of {len(faces.names)} people, "
          f"{width}x{height}x{channels} (own size {faces.native.shape[2]}x"
          f"{faces.native.shape[1]}); {len(folds)} fold(s) of {config.protocol}; batches of "
          f"{p} people x {k} images, {config.epochs} x {config.steps_per_epoch} steps",
          flush=True)

    embeddings, untrained = [], []
    for number, fold in enumerate(folds, start=1):
        with run.strategy.scope():
            network = model.build((width, height), channels, config.embedding_dim,
                                  config.width, config.dropout, config.weight_decay)
            if source is not None:
                model.init_from(network, source, config.init_from)
            model.compile_triplet(network, config.margin, config.mining, config.distance,
                                  config.learning_rate, config.epochs * config.steps_per_epoch,
                                  config.jit_compile)
        untrained.append(model.predict(network, faces.images))
        stream = data.stream(faces.images[fold["train"]], faces.labels[fold["train"]], p, k,
                             config.seed + number - 1, config.steps_per_epoch, config.augment)
        training.fit(run, network, stream=stream, epochs=config.epochs,
                     name=f"fold{number}" if len(folds) > 1 else "")
        embeddings.append(model.predict(network, faces.images))

    metrics, baselines, details = evaluate.evaluate(embeddings, untrained, faces, folds,
                                                    config.protocol, config.seed)
    # The last fold's network is the run's model; serving takes images as data.py gives.
    training.save_model(run, network, serving=model.serving(network))
    sample = folds[-1]["test"][:32]
    np.savez(run.path("test_embeddings.npz"), images=faces.images[sample],
             embeddings=embeddings[-1][sample])
    pictures = report.pictures(run.model_dir, faces, folds, embeddings, details)
    headline = ("verification_accuracy" if config.protocol == "unseen_identities"
                else "identification_error")
    return training.finish(
        run, model=network, metrics=metrics, baselines=baselines, headline=headline,
        tolerances={name: TOLERANCES[name] for name in metrics if name in TOLERANCES},
        references=report.references(collection, config.protocol),
        tables=report.tables(config.protocol, f"triplet CNN ({config.mining})", metrics,
                             baselines, folds, faces.labels),
        dataset={"name": faces.name, "source": report.source(collection, config.dataset),
                 "fingerprint": results.fingerprint(faces.native, faces.labels),
                 "images": len(faces.labels), "people": len(faces.names),
                 "input_size": [width, height, channels],
                 "native_size": [faces.native.shape[2], faces.native.shape[1]],
                 "protocol": config.protocol, "identities_per_batch": p,
                 "images_per_identity": k},
        artifacts=pictures,
    )


if __name__ == "__main__":
    cli.main(Config, train)
