"""Every Loss class and loss layer round-trips its config; a `.keras` file loads in a fresh
process."""

import json
import os
import subprocess
import sys
from pathlib import Path

from common import losses

import numpy as np
import pytest
import tensorflow as tf

REPOSITORY = Path(__file__).resolve().parents[3]
RNG = np.random.default_rng(80)


def _regression_batch():
    return RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2))


def _binary_batch():
    return (RNG.uniform(size=(6, 1)) < 0.5).astype("int32"), RNG.normal(size=(6, 1))


def _image_batch():
    return RNG.integers(0, 3, size=(2, 4, 4)), tf.nn.softmax(RNG.normal(size=(2, 4, 4, 3))).numpy()


def _depth_batch():
    return RNG.uniform(0.0, 4.0, size=(2, 4, 4)), RNG.uniform(0.5, 4.0, size=(2, 4, 4))


def _list_batch():
    return RNG.integers(-1, 3, size=(3, 5)).astype("float32"), RNG.normal(size=(3, 5))


def _embedding_batch():
    return RNG.integers(0, 3, size=8), RNG.normal(size=(8, 4))


# Every Loss class with non-default arguments, and a batch it can score.
LOSSES = [
    (losses.WeightedMSE(reduction="sum", name="wmse"), _regression_batch),
    (losses.MSEPlusRelativeError(weight=0.2, eps=1e-3), _regression_batch),
    (losses.Huber(delta=2.5, reduction="none"), _regression_batch),
    (losses.HuberNLL(delta=0.7, scale=1.9), _regression_batch),
    (losses.WeightedBinaryCrossentropy(pos_weight=7.0, from_logits=True), _binary_batch),
    (losses.BinaryFocalCrossentropy(alpha=0.4, gamma=1.5, from_logits=True), _binary_batch),
    (
        losses.BCEWithSoftPrecision(pos_weight=3.0, precision_weight=0.4, from_logits=True),
        _binary_batch,
    ),
    (losses.DiceLoss(smooth=0.5), _image_batch),
    (losses.MaskedL1(name="l1"), _depth_batch),
    (losses.BerHu(), _depth_batch),
    (losses.ScaleInvariantLogLoss(lam=0.85), _depth_batch),
    (losses.RankNetLoss(normalization="tf_ranking"), _list_batch),
    (losses.PairwiseHingeLoss(margin=0.3, normalization="list_mean"), _list_batch),
    (losses.ListMLELoss(), _list_batch),
    (losses.ListwiseMSE(), _list_batch),
    (losses.TripletLoss(margin=0.3, mining="batch_all", distance="cosine"), _embedding_batch),
    (losses.PrecisionAtRecall(target_recall=0.7, multiplier=2.0, surrogate="logistic"),
     _binary_batch),
    (losses.RecallAtPrecision(target_precision=0.3, dual_learning_rate=0.5), _binary_batch),
    (losses.PrecisionAtShare(flagged_share=0.2), _binary_batch),
]


def _name(case):
    return type(case[0]).__name__


def test_every_public_loss_class_is_covered():
    loss_classes = {
        name for name in losses.__all__
        if isinstance(getattr(losses, name), type)
        and issubclass(getattr(losses, name), tf.keras.losses.Loss)
    }
    assert loss_classes == {type(loss).__name__ for loss, _ in LOSSES}


@pytest.mark.parametrize("loss,batch", LOSSES, ids=[_name(case) for case in LOSSES])
def test_loss_config_round_trip(loss, batch):
    config = loss.get_config()
    rebuilt = type(loss).from_config(config)
    assert rebuilt.get_config() == config
    y_true, y_pred = batch()
    np.testing.assert_allclose(rebuilt(y_true, y_pred), loss(y_true, y_pred), rtol=1e-12)
    # Through Keras' registry, by registered name: our class, not a Keras built-in namesake.
    assert tf.keras.utils.get_registered_name(type(loss)) == f"common>{type(loss).__name__}"
    restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


def test_loss_layers_config_round_trip():
    for layer in (
        losses.AdaptiveHuber(initial_delta=0.4, initial_scale=2.0, learn_scale=False, name="ah"),
        losses.UncertaintyWeighting(3, initial_log_variance=-0.5, name="uw"),
    ):
        restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
        np.testing.assert_allclose(
            [w.numpy() for w in restored.weights], [w.numpy() for w in layer.weights]
        )
    assert not losses.AdaptiveHuber(learn_scale=False).raw_scale.trainable


_LOAD_IN_FRESH_PROCESS = """
import json, sys
import common.losses  # registers the classes: no custom_objects below
import numpy as np
import tensorflow as tf

model = tf.keras.models.load_model(sys.argv[1])
data = np.load(sys.argv[2])
inputs = {"x": data["x"], "target": data["target"]}
labels = {"value": data["value"], "flag": data["flag"]}
print(json.dumps({
    "losses": {name: [type(loss).__module__, type(loss).__name__, loss.get_config()]
               for name, loss in model.loss.items()},
    "adaptive_huber": model.get_layer("adaptive_huber").get_config(),
    "delta": float(model.get_layer("adaptive_huber").delta),
    "evaluation": model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True),
}))
"""


def test_keras_file_loads_in_a_fresh_process_without_custom_objects(tmp_path):
    features = tf.keras.Input((3,), name="x")
    target = tf.keras.Input((1,), name="target")
    value = tf.keras.layers.Dense(1, name="value")(features)
    flag = tf.keras.layers.Dense(1, name="flag")(features)
    model = tf.keras.Model({"x": features, "target": target}, {"value": value, "flag": flag})
    adaptive = losses.AdaptiveHuber(initial_delta=0.6, name="adaptive_huber")
    model.add_loss(adaptive((target, value)))
    loss = {
        "value": losses.Huber(delta=2.5),
        "flag": losses.BCEWithSoftPrecision(pos_weight=3.0, precision_weight=0.5, from_logits=True),
    }
    model.compile(tf.keras.optimizers.SGD(0.01), loss=loss)
    adaptive.raw_delta.assign(1.25)  # a trained value that must come back with the weights
    data = {
        "x": RNG.normal(size=(16, 3)).astype("float32"),
        "target": RNG.normal(size=(16, 1)).astype("float32"),
        "value": RNG.normal(size=(16, 1)).astype("float32"),
        "flag": (RNG.uniform(size=(16, 1)) < 0.5).astype("float32"),
    }
    expected = model.evaluate(
        {"x": data["x"], "target": data["target"]},
        {"value": data["value"], "flag": data["flag"]},
        batch_size=16,
        verbose=0,
        return_dict=True,
    )
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", **data)

    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY), TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_IN_FRESH_PROCESS,
            str(tmp_path / "model.keras"),
            str(tmp_path / "data.npz"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    for name, original in loss.items():
        module, class_name, config = loaded["losses"][name]
        assert module.startswith("common.losses") and class_name == type(original).__name__
        assert config == json.loads(json.dumps(original.get_config()))
    assert loaded["adaptive_huber"]["initial_delta"] == 0.6
    assert loaded["delta"] == pytest.approx(float(adaptive.delta), rel=1e-6)
    for key, value in expected.items():
        assert loaded["evaluation"][key] == pytest.approx(value, rel=1e-5), key
