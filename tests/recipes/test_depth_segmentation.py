"""Tests of recipes/depth_segmentation: renderer, NYUv2 loader, metrics, ΔM, train step,
the config, and whole runs of `train(config)` in this process (smoke, two replicas,
resume, saved models, bad input); one run of the real command line."""

import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

from common import cli, intervals, results
from common.config import NOT_CONFIGURATION

import h5py
import numpy as np
import pytest
import tensorflow as tf
from scipy import io as scipy_io
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from recipes.depth_segmentation import data, evaluate, model, report, synthetic
from recipes.depth_segmentation.config import Config
from tests.conftest import RecipeRun, run_command

RECIPE = "depth_segmentation"
REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN = REPOSITORY / "recipes" / RECIPE / "train.py"
CONFIGS = REPOSITORY / "recipes" / RECIPE / "configs"


def run_train(model_dir: Path, *args: str) -> RecipeRun:
    """`python train.py args --model_dir=...`, run in this process (`cli.parse` and
    `cli.run`): returncode 1 for a refused flag, "traceback" for an exception."""
    status, stdout, stderr = run_command(RECIPE, [*args, f"--model_dir={model_dir}"])
    return RecipeRun(types.SimpleNamespace(returncode=status, stdout=stdout, stderr=stderr),
                     model_dir)


def rows_of(record, name):
    return sorted((e for e in record["history"] if e.get("model") == name),
                  key=lambda e: e["epoch"])


# ------------------------------------------------------------------------------ renderer

def test_objects_occlude_the_room_and_floor_depth_matches_the_camera_model():
    rng = np.random.default_rng(3)
    for _ in range(5):
        scene = synthetic.random_scene(rng)
        _, depth, labels = synthetic.render(scene, 64)
        _, room_depth, room_labels = synthetic.render({**scene, "objects": []}, 64)
        objects = labels >= 3
        assert objects.any()
        assert (depth[objects] < room_depth[objects]).all()
        np.testing.assert_array_equal(depth[~objects], room_depth[~objects])
        np.testing.assert_array_equal(labels[~objects], room_labels[~objects])
        # Floor pixels: depth of the ray hitting y = 0, derived here independently.
        v, _ = np.mgrid[0:64, 0:64]
        world_y = np.cos(scene["pitch"]) * -(v - 31.5) / (0.9 * 64) + np.sin(scene["pitch"])
        floor = room_labels == 0
        np.testing.assert_allclose(room_depth[floor], scene["camera"][1] / -world_y[floor],
                                   rtol=1e-5)


def test_synthetic_rooms_are_fixed_by_their_seed_and_valid():
    first, again, other = (synthetic.rooms(12, 32, seed=s) for s in (5, 5, 6))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["images"], other["images"])
    assert (first["depths"] == 0).any() and (first["depths"] > 0).mean() > 0.9
    data.validate(first, 6, "synthetic")


# ------------------------------------------------------------------------------ NYUv2

def write_nyu(folder: Path, images, depths, labels, keys=("images", "depths", "labels"),
              splits=None, mapping=None, name="nyu_depth_v2_labeled.mat") -> Path:
    """Files laid out as the NYUv2 labelled set (MATLAB v7.3 = HDF5, transposed)."""
    arrays = {"images": images.transpose(0, 3, 2, 1), "depths": depths.transpose(0, 2, 1),
              "labels": labels.transpose(0, 2, 1)}
    with h5py.File(folder / name, "w") as file:
        for key in keys:
            file[key] = arrays[key]
    if mapping is not None:
        scipy_io.savemat(folder / "classMapping40.mat",
                         {"mapClass": mapping.reshape(1, -1).astype(np.float64)})
    if splits is not None:
        scipy_io.savemat(folder / "splits.mat", {"trainNdxs": splits[0].reshape(-1, 1) + 1,
                                                 "testNdxs": splits[1].reshape(-1, 1) + 1})
    return folder / name


@pytest.fixture
def nyu(tmp_path):
    rng = np.random.default_rng(0)
    n, h, w = 10, 64, 96
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    depths[:, :4] = 0.0
    labels = rng.integers(0, 895, (n, h, w)).astype(np.uint16)
    mapping = rng.integers(1, 41, 894)
    mapping[:3] = [1, 5, 25]  # raw 1 -> wall, 2 -> chair, 3 -> tv (NYU-40 ids)
    splits = (np.arange(0, 7), np.arange(7, 10))
    path = write_nyu(tmp_path, images, depths, labels, splits=splits, mapping=mapping)
    return path, images, depths, labels, mapping


def test_nyuv2_loader_transposes_maps_resizes_and_reads_the_official_split(nyu):
    path, images, depths, labels, mapping = nyu
    arrays, official = data.load_nyuv2(str(path), resolution=(32, 48))
    assert arrays["images"].shape == (10, 32, 48, 3)
    # Halving: RGB is the mean of each 2x2 block (area), depth and labels the pixel at
    # offset 1 of the block (nearest to the output pixel's centre).
    block_mean = images.reshape(10, 32, 2, 48, 2, 3).astype(float).mean((2, 4))
    np.testing.assert_allclose(arrays["images"], block_mean, atol=0.51)
    np.testing.assert_array_equal(arrays["depths"], depths[:, 1::2, 1::2])
    raw = labels[:, 1::2, 1::2].astype(int)
    expected = np.where(raw == 0, -1, 0)
    for r in np.unique(raw[raw > 0]):
        expected[raw == r] = data.NYU40_TO_13[mapping[r - 1] - 1] - 1
    np.testing.assert_array_equal(arrays["labels"], expected)
    for r, name in {1: "wall", 2: "chair", 3: "tv"}.items():
        assert (arrays["labels"][raw == r] == data.NYU13_CLASSES.index(name)).all()
    np.testing.assert_array_equal(official[0], np.arange(7))
    np.testing.assert_array_equal(official[1], np.arange(7, 10))


def test_nyu40_to_13_keeps_the_classes_both_splits_name():
    names40 = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
               "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
               "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
               "refrigerator", "tv", "paper", "towel", "shower curtain", "box", "whiteboard",
               "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag",
               "other structure", "other furniture", "other prop"]
    for index, name in enumerate(names40):
        if name in data.NYU13_CLASSES:
            assert data.NYU13_CLASSES[data.NYU40_TO_13[index] - 1] == name
    assert data.NYU13_CLASSES[data.NYU40_TO_13[names40.index("other prop")] - 1] == "objects"


def test_malformed_nyu_files_are_named(nyu):
    path, images, depths, labels, _ = nyu
    folder = path.parent
    cases = {
        "a directory": (folder, "is a directory"),
        "text": (folder / "text.mat", "not a readable MATLAB file"),
        "no labels": (write_nyu(folder, images, depths, labels, keys=("images", "depths"),
                                name="nolabels.mat"), "lacks ['labels']"),
        "nan": (write_nyu(folder, images, np.where(depths > 5, np.nan, depths), labels,
                          name="nan.mat"), "NaN"),
        "sizes": (write_nyu(folder, images, depths[:, :-8], labels, name="size.mat"),
                  "disagree in size"),
    }
    (folder / "text.mat").write_text("not a MATLAB file")
    for target, message in cases.values():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            data.load_nyuv2(str(target), resolution=(32, 48))
    scipy_io.savemat(folder / "classMapping40.mat", {"mapClass": np.arange(100.0)})
    with pytest.raises(ValueError, match="894 integer ids"):
        data.load_nyuv2(str(path), resolution=(32, 48))


# ------------------------------------------------------------------------------ metrics

def test_segmentation_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 5, (7, 9, 11))
    predictions = np.clip(np.where(rng.random(labels.shape) < 0.6, labels,
                                   rng.integers(0, 5, labels.shape)), 0, 4)
    per_image = evaluate.per_image_confusion(labels, predictions, num_classes=6)
    keep = labels.ravel() >= 0
    t, p = labels.ravel()[keep], predictions.ravel()[keep]
    np.testing.assert_array_equal(per_image.sum(0), confusion_matrix(t, p, labels=range(6)))
    found = evaluate.segmentation_metrics(per_image)
    assert np.isnan(found["iou_per_class"][5])  # absent class: left out of the mean
    assert found["miou"] == pytest.approx(jaccard_score(t, p, labels=range(5), average="macro"))
    assert found["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))


def test_depth_metrics_match_numpy():
    rng = np.random.default_rng(2)
    true = rng.uniform(0.5, 10, (6, 8, 8))
    true[rng.random(true.shape) < 0.2] = 0.0
    predicted = np.abs(true * rng.uniform(0.7, 1.4, true.shape)) + 0.01
    t, p = true[true > 0], predicted[true > 0]
    expected = {"abs_rel": np.mean(np.abs(p - t) / t), "abs_err": np.mean(np.abs(p - t)),
                "rmse": np.sqrt(np.mean((p - t) ** 2)),
                "delta1": np.mean(np.maximum(p / t, t / p) < 1.25)}
    found = evaluate.depth_metrics(evaluate.per_image_depth_sums(true, predicted))
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-12)


def _three_networks(rng, labels, true, multi_right, single_right, multi_factor,
                    single_factor):
    """One seed's per-image statistics: a multi-task network right on `multi_right` of the
    pixels with depth off by `multi_factor`, the single-task ones likewise."""
    seg = {name: np.where(rng.random(labels.shape) < right, labels, (labels + 1) % 4)
           for name, right in (("multi", multi_right), ("single", single_right))}
    stats = {name: {"confusion": evaluate.per_image_confusion(labels, seg[key], 4),
                    "depth": evaluate.per_image_depth_sums(true, true * factor)}
             for name, key, factor in (("multi_task", "multi", multi_factor),
                                       ("segmentation_only", "single", single_factor),
                                       ("depth_only", "single", single_factor))}
    m = {**jaccard_like(labels, seg["multi"]), "abs_err": np.mean(abs(multi_factor - 1) * true),
         "abs_rel": abs(multi_factor - 1)}
    s = {**jaccard_like(labels, seg["single"]),
         "abs_err": np.mean(abs(single_factor - 1) * true), "abs_rel": abs(single_factor - 1)}
    delta_m = 100 * np.mean([-(m["miou"] - s["miou"]) / s["miou"],
                             -(m["pixel_accuracy"] - s["pixel_accuracy"]) / s["pixel_accuracy"],
                             (m["abs_err"] - s["abs_err"]) / s["abs_err"],
                             (m["abs_rel"] - s["abs_rel"]) / s["abs_rel"]])
    return stats, {"delta_m": delta_m, "miou_gain": m["miou"] - s["miou"],
                   "abs_rel_gain": s["abs_rel"] - m["abs_rel"], "miou": m["miou"]}


def test_delta_m_and_gains_follow_the_definition():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, (30, 8, 8))
    true = rng.uniform(1, 5, (30, 8, 8))
    stats, expected = _three_networks(rng, labels, true, 0.8, 0.6, 1.1, 1.3)
    found, baselines, _ = evaluate.evaluate([stats], seed=0, resamples=200)
    assert found["delta_m"].value == pytest.approx(expected["delta_m"], rel=1e-9)
    assert found["delta_m"].high < 0  # better everywhere: negative, interval clear of 0
    assert found["miou_gain"].value == pytest.approx(expected["miou_gain"])
    assert found["abs_rel_gain"].value == pytest.approx(0.2)
    assert found["abs_rel_gain"].low > 0
    assert baselines["depth_only"]["abs_rel"].value == pytest.approx(0.3)


def test_seeds_are_averaged_each_against_its_own_single_task_networks():
    """Two seeds on the same images: every value is the mean of the per-seed values of
    the definition, and the interval spans the seeds' spread (seeds resampled)."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (40, 8, 8))
    true = rng.uniform(1, 5, (40, 8, 8))
    seeds = [_three_networks(rng, labels, true, 0.8, 0.6, 1.1, 1.3),
             _three_networks(rng, labels, true, 0.6, 0.7, 1.25, 1.2)]
    found, _, per_seed = evaluate.evaluate([stats for stats, _ in seeds], seed=0,
                                           resamples=300)
    for name in ("delta_m", "miou_gain", "abs_rel_gain", "miou"):
        values = [expected[name] for _, expected in seeds]
        assert per_seed["multi_task"][name] == pytest.approx(values, rel=1e-9), name
        assert found[name].value == pytest.approx(np.mean(values), rel=1e-9), name
        # (1e-12: a value without row noise lands on the seed's own, up to rounding)
        assert found[name].low <= min(values) + 1e-12, name
        assert found[name].high >= max(values) - 1e-12, name


def test_a_gain_inside_its_tolerance_or_with_0_in_its_interval_is_not_claimed():
    gain = intervals.Interval(0.02, 0.01, 0.03)
    assert report.verdict("miou_gain", gain, 0.01) == "multi-task better"
    assert report.verdict("miou_gain", gain, 0.03) == "not distinguishable"
    assert report.verdict("miou_gain", intervals.Interval(0.02, -0.01, 0.05),
                          0.01) == "not distinguishable"
    assert report.verdict("delta_m", intervals.Interval(-3.0, -4.0, -2.0),
                          1.0) == "multi-task better"
    assert report.verdict("delta_m", intervals.Interval(3.0, 2.0, 4.0),
                          1.0) == "single-task better"


def jaccard_like(labels, predictions):
    t, p = labels.ravel(), predictions.ravel()
    return {"miou": jaccard_score(t, p, average="macro"), "pixel_accuracy": accuracy_score(t, p)}


# ------------------------------------------------------------------------------ train step

def _one_step(strategy, weighting, images, targets, start):
    with strategy.scope():
        network = model.build(4, image_shape=(16, 16), base_filters=4, levels=1)
        trainer = model.MultiTask(network, num_classes=4, weighting=weighting,
                                  depth_loss="berhu", cross_entropy_weight=0.5)
        trainer.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    if start is not None:
        for variable, value in zip(network.trainable_variables, start):
            variable.assign(value)
    before = [v.numpy() for v in network.trainable_variables]
    trainer.fit(tf.data.Dataset.from_tensors((images, targets)).repeat(2), epochs=1,
                verbose=0)
    extra = trainer.famo.logits.numpy() if weighting == "famo" else None
    return before, [v.numpy() for v in network.trainable_variables], extra


# pcgrad and aligned_mtl: tests/common/test_balancing.py and the 2-replica smoke run below.
@pytest.mark.parametrize("weighting", ["uncertainty", "famo"])
def test_two_replicas_take_the_one_device_step(mirrored_strategy, weighting):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    targets = {"labels": rng.integers(-1, 4, (4, 16, 16)).astype(np.int32),
               "depth": np.where(rng.random((4, 16, 16)) < 0.1, 0,
                                 rng.uniform(1, 5, (4, 16, 16))).astype(np.float32)}
    tf.keras.utils.set_random_seed(0)
    start, one, famo_one = _one_step(tf.distribute.get_strategy(), weighting, images,
                                     targets, None)
    _, two, famo_two = _one_step(mirrored_strategy, weighting, images, targets, start)
    assert min(np.abs(a - b).max() for a, b in zip(start, one)) > 0  # every weight moved
    for expected, got in zip(one, two):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    if weighting == "famo":
        assert np.abs(famo_one).max() > 0
        np.testing.assert_allclose(famo_two, famo_one, rtol=1e-4, atol=1e-7)


def test_attention_masks_are_each_decoders_only_path_from_the_shared_encoder():
    """Closing the depth task's masks (sigmoid -> 0) cuts its decoder off from the image
    and leaves segmentation as it was; single-task networks have no masks."""
    tf.keras.utils.set_random_seed(0)
    network = model.build(3, image_shape=(16, 16), base_filters=4, levels=1,
                                  exchange=False, attention=True)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    before = network(images)
    masks = [layer for layer in network.layers if layer.name.startswith("depth_attention")
             and not layer.name.endswith("_applied")]
    assert len(masks) == 2  # the level-0 skip and the bottleneck
    for layer in masks:
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.full_like(bias, -100.0)])
    after = network(images)
    np.testing.assert_array_equal(after["segmentation"].numpy(),
                                  before["segmentation"].numpy())
    assert np.abs(before["depth"][0] - before["depth"][1]).max() > 1e-3
    np.testing.assert_allclose(after["depth"][0], after["depth"][1], rtol=1e-6)
    single = model.build(3, ("depth",), image_shape=(16, 16), base_filters=4,
                                 levels=1, attention=True, shared_width=2.0)
    plain = model.build(3, ("depth",), image_shape=(16, 16), base_filters=4, levels=1)
    assert single.count_params() == plain.count_params()
    wide = model.build(3, image_shape=(16, 16), base_filters=4, levels=1,
                               shared_width=2.0)
    assert wide.get_layer("stem").filters == 8 and wide.get_layer("depth_up0").filters == 4


def test_logged_loss_weights_are_the_ones_the_step_applies():
    network = model.build(3, image_shape=(16, 16), base_filters=2, levels=1)
    for weighting, expected in (("static", [1.0, 0.5]), ("pcgrad", [1.0, 1.0]),
                                ("aligned_mtl", [1.0, 1.0])):
        trainer = model.MultiTask(network, num_classes=3, weighting=weighting,
                                  static_weights=(1.0, 0.5))
        assert trainer.loss_weights(None).numpy().tolist() == expected, weighting


def test_dwa_temperature_reaches_the_callback():
    network = model.build(3, image_shape=(16, 16), base_filters=2, levels=1)
    weights = []
    for temperature in (0.5, 4.0):
        trainer = model.MultiTask(network, num_classes=3, weighting="dwa",
                                  dwa_temperature=temperature)
        for epoch, losses in enumerate([(2.0, 1.0), (1.0, 0.9)]):
            trainer.dwa.on_epoch_end(epoch, {"segmentation_loss": losses[0],
                                             "depth_loss": losses[1]})
        weights.append(trainer.loss_weights(None).numpy())
    ratios = np.array([0.5, 0.9])
    for temperature, found in zip((0.5, 4.0), weights):
        np.testing.assert_allclose(found, 2 * np.exp(ratios / temperature)
                                   / np.exp(ratios / temperature).sum(), rtol=1e-6)
    assert not np.allclose(weights[0], weights[1])


# ------------------------------------------------------------------------------ config

def test_documented_commands_parse(repository, monkeypatch):
    """The command atop train.py and each config's command parse as written (from the
    repository: flagfiles are relative to it)."""
    monkeypatch.chdir(repository)
    commands = re.findall(r"^\s*(python recipes/\S+/train\.py.*)$", TRAIN.read_text(), re.M)
    for config in sorted(CONFIGS.glob("*.cfg")):
        commands += re.findall(r"^# \.venv/bin/(python recipes/\S+/train\.py.*)$",
                               config.read_text(), re.M)
    assert len(commands) == 1 + len(list(CONFIGS.glob("*.cfg")))
    for command in commands:
        cli.parse(Config, shlex.split(command)[2:])


@pytest.mark.parametrize("record_path", sorted((results.RESULTS_DIR / RECIPE).glob("*.json")),
                         ids=lambda path: path.stem)
def test_each_preset_still_gives_its_published_flags(record_path, repository, monkeypatch):
    """The flagfiles list only what differs from config.py's defaults now: each must
    still resolve to every setting its published record was made with."""
    monkeypatch.chdir(repository)
    record = json.loads(record_path.read_text())
    config = cli.parse(Config, [f"--flagfile={CONFIGS / record['config']}.cfg"])
    published = {name: value for name, value in record["flags"].items()
                 if name not in NOT_CONFIGURATION}
    assert {name: config.flags[name] for name in published} == published


def test_weighting_choices_are_the_models_loss_and_gradient_weightings():
    for weighting in (*model.LOSS_WEIGHTINGS, *model.GRADIENT_WEIGHTINGS):
        assert Config(weighting=weighting).weighting == weighting
    with pytest.raises(ValueError, match="--weighting"):
        Config(weighting="equal")


# ------------------------------------------------------------------------------ runs

SMOKE_ARGS = ("--smoke", "--weighting=dwa", "--dwa_temperature=0.5")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The docstring command with --smoke and DWA at T = 0.5, all three networks."""
    run = run_train(tmp_path_factory.mktemp("smoke") / "run", *SMOKE_ARGS)
    assert run.returncode == 0, run
    return run


def test_smoke_record_leads_with_delta_m_and_beats_trivial_predictions(smoke_run):
    record = smoke_run.record
    found = record["metrics"]
    assert record["headline"] == "delta_m"
    for name in ("delta_m", "miou_gain", "abs_rel_gain"):
        assert found[f"{name}_ci_low"] <= found[name] <= found[f"{name}_ci_high"]
    # better than the majority class and than the median depth everywhere
    assert found["pixel_accuracy"] > 0.45 and found["abs_rel"] < 0.5, found
    assert set(record["baselines"]) == {"segmentation_only", "depth_only"}
    assert "metric" in smoke_run.stdout and "delta_m" in smoke_run.stdout
    rows = rows_of(record, "multi_task")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["weight_segmentation"] == rows[1]["weight_segmentation"] == 1.0
    # λ_k = K·softmax(w / T), w_k = L_k(t-1) / L_k(t-2), T = 0.5 from the flag
    ratios = np.array([rows[1][f"{t}_loss"] / rows[0][f"{t}_loss"]
                       for t in ("segmentation", "depth")])
    expected = 2 * np.exp(ratios / 0.5) / np.exp(ratios / 0.5).sum()
    assert [rows[2]["weight_segmentation"], rows[2]["weight_depth"]] == pytest.approx(
        expected, rel=1e-5)
    assert (smoke_run.model_dir / "predictions.png").stat().st_size > 10_000
    assert record["models"]["model"] == {"keras": "model.keras", "saved_model": "saved_model"}


def test_seeds_give_means_intervals_and_tolerances_of_their_per_seed_values(
        smoke_run, train_recipe):
    """--num_seeds=2: seed 42's networks are the one-seed run's (same values), seed 43's
    are its own; each value is the mean of the per-seed values, its interval spans them,
    and its tolerance is 3 standard errors of them."""
    run = train_recipe(RECIPE, *SMOKE_ARGS, "--num_seeds=2")
    assert run.returncode == 0, run
    record, one_seed = run.record, smoke_run.record
    assert record["seeds"] == [42, 43]
    assert {e.get("model") for e in record["history"]} == {
        "multi_task", "segmentation_only", "depth_only", "multi_task_seed43",
        "segmentation_only_seed43", "depth_only_seed43"}
    per_seed, found = record["per_seed"]["multi_task"], record["metrics"]
    for name in ("delta_m", "miou_gain", "abs_rel_gain", "miou", "abs_rel",
                 "final_weight_depth"):
        values = np.array(per_seed[name])
        assert values[0] == pytest.approx(one_seed["metrics"][name], rel=1e-9), name
        assert values[1] != values[0], name  # seed 43 trained its own networks
        assert found[name] == pytest.approx(values.mean(), rel=1e-9), name
        assert record["tolerances"][name] == pytest.approx(
            3 * values.std(ddof=1) / np.sqrt(2), rel=1e-9), name
        if name != "final_weight_depth":
            assert found[f"{name}_ci_low"] <= values.min() + 1e-12, name
            assert found[f"{name}_ci_high"] >= values.max() - 1e-12, name
    baseline = record["baselines"]["segmentation_only"]["miou"]
    assert baseline == pytest.approx(np.mean(record["per_seed"]["segmentation_only"]["miou"]))
    assert record["per_seed"]["segmentation_only"]["miou"][0] == pytest.approx(
        one_seed["baselines"]["segmentation_only"]["miou"], rel=1e-9)
    claims = record["tables"]["claims (mean over seeds)"]["rows"]
    assert [row[0] for row in claims][:3] == ["delta_m", "miou_gain", "pixel_accuracy_gain"]


LOAD_AND_PREDICT = """
import sys, numpy as np
import common  # noqa: F401
import tensorflow as tf
folder = sys.argv[1]
sample = np.load(folder + "/test_predictions.npz")
network = tf.keras.models.load_model(folder + "/model.keras")
keras_out = network(sample["images"], training=False)
serve = tf.saved_model.load(folder + "/saved_model").signatures["serving_default"]
served = serve(images=tf.constant(sample["images"]))
for name, value in (("depth", keras_out["depth"]), ("segmentation", keras_out["segmentation"]),
                    ("depth", served["depth"]), ("segmentation", served["class_scores"])):
    np.testing.assert_allclose(value.numpy(), sample[name], rtol=1e-5, atol=1e-6)
print("reproduced")
"""


def test_saved_models_reproduce_the_test_predictions_in_a_fresh_process(smoke_run):
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT,
                                str(smoke_run.model_dir)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "reproduced" in completed.stdout


def test_killed_run_resumes_network_by_network_to_the_same_record(smoke_run, tmp_path):
    """Crash in the multi-task network, then in the segmentation baseline, then finish."""
    model_dir = tmp_path / "run"
    crash = ("--simulate_crash_at_step=15", "--backup_seconds=0")  # epoch 3 of 6 steps each
    first = run_train(model_dir, *SMOKE_ARGS, *crash)
    assert first.returncode != 0 and "simulated crash" in first.stderr, first
    second = run_train(model_dir, *SMOKE_ARGS, *crash)
    assert second.returncode != 0 and "resuming multi_task" in second.stdout, second.stdout
    third = run_train(model_dir, *SMOKE_ARGS)
    assert third.returncode == 0, third
    assert "multi_task already trained: loaded" in third.stdout
    assert "resuming segmentation_only" in third.stdout
    record = third.record
    keys = [(e.get("model"), e["epoch"]) for e in record["history"]]
    assert len(keys) == len(set(keys)) == 9
    expected = smoke_run.record
    assert record["weights_fingerprint"] == expected["weights_fingerprint"]
    for name in ("delta_m", "miou", "abs_rel", "final_weight_depth"):
        assert record["metrics"][name] == pytest.approx(expected["metrics"][name], rel=1e-6)
    again = run_train(model_dir, *SMOKE_ARGS)
    assert again.returncode == 0 and "finished run" in again.stdout


def test_two_replicas_with_pcgrad_match_one_device(tmp_path):
    args = ("--smoke", "--weighting=pcgrad", "--nobaselines", "--epochs=2")
    single = run_train(tmp_path / "one", *args)
    mirrored = run_train(tmp_path / "two", *args, "--strategy=mirrored", "--num_cpu_devices=2")
    assert single.returncode == 0 and mirrored.returncode == 0, mirrored
    assert single.record["strategy"]["replicas"] == 1
    assert mirrored.record["strategy"]["replicas"] == 2
    assert single.record["headline"] == "miou"  # no single-task networks: no ΔM
    for a, b in zip(rows_of(single.record, "multi_task"), rows_of(mirrored.record,
                                                                  "multi_task")):
        for key in ("segmentation_loss", "depth_loss"):
            assert b[key] == pytest.approx(a[key], rel=2e-3), key


def test_nyuv2_config_runs_on_a_small_written_file(nyu, tmp_path):
    path = nyu[0]
    run = run_train(tmp_path / "run", f"--flagfile={CONFIGS / 'nyuv2.cfg'}",
                    f"--dataset=nyuv2:{path}", "--smoke", "--resolution=64x96",
                    "--global_batch_size=2", "--epochs=1", "--base_filters=4")
    assert run.returncode == 0, run
    record = run.record
    assert record["dataset"]["classes"] == list(data.NYU13_CLASSES)
    assert record["dataset"]["image_size"] == [64, 96]
    assert record["dataset"]["evaluation_images"] == 3  # the official split's test part
    assert {r["metric"] for r in record["references"]} >= {"miou", "abs_rel", "delta_m"}


def test_bad_input_exits_2_with_one_line_from_the_real_command(nyu, tmp_path):
    """The process itself: exit status and stderr of `python train.py` (the in-process
    table below covers the cases)."""
    path, images, depths, labels, _ = nyu
    target = write_nyu(path.parent, images, depths, labels, keys=("images", "labels"),
                       name="x.mat")
    model_dir = tmp_path / "never"
    # Without the parent's TF_CPP_MIN_LOG_LEVEL (set by its `import common`), the child
    # quiets TensorFlow's start-up lines itself, as a user's process does.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, str(TRAIN), f"--dataset=nyuv2:{target}",
                                "--smoke", f"--model_dir={model_dir}"], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert "lacks ['depths']" in lines[0]
    assert not model_dir.exists()


# Flags refused at the parse (status 1), each with the flag its message must name.
BAD_FLAGS = {
    "seg_weight": "inf", "depth_weight": "1e30", "cross_entropy_weight": "nan",
    "dwa_temperature": "0", "shared_width": "inf", "base_filters": "100000", "levels": "50",
    "shared_levels": "-1", "train_images": "1000000000", "test_images": "1",
    "image_size": "100000", "num_classes": "1", "test_fraction": "nan",
    "validation_fraction": "1.0", "num_seeds": "0",
}


def test_bad_inputs_fail_in_one_line_before_anything_is_written(nyu, tmp_path, bad_inputs):
    """Images x1000 and labels 0.5..2.5 in a .mat and an .npz, a directory and a file
    without depths as the NYUv2 file, both static task weights 0, cross-field and
    malformed flags, and each numeric flag out of its range: all refused, all in one
    process."""
    path, images, depths, labels, mapping = nyu
    fractional = np.random.default_rng(1).choice([0.5, 1.5, 2.5], labels.shape)
    files = {}
    for case, arrays in {"images_x1000": (images * 1000.0, labels),
                         "fractional_labels": (images, fractional)}.items():
        folder = tmp_path / case
        folder.mkdir()
        files[f"nyuv2_{case}"] = write_nyu(folder, arrays[0], depths, arrays[1],
                                           mapping=mapping)
        files[f"npz_{case}"] = folder / "own.npz"
        np.savez(files[f"npz_{case}"], images=arrays[0], depths=depths,
                 labels=arrays[1] % 3)  # ids 0..2 or 0.5..2.5
    cases = {name: ["--smoke", f"--dataset={name.partition('_')[0]}:{path}"]
             for name, path in files.items()}
    expected = {name: (f"{path}: {'labels' if 'labels' in name else 'images'}",
                       f"found {images[0, 0, 0, 0] * 1000.0} at [image 0, row 0, column 0, "
                       if "x1000" in name else f"found {fractional[0, 0, 0]} at [image 0, ")
                for name, path in files.items()}
    no_depths = write_nyu(path.parent, images, depths, labels, keys=("images", "labels"),
                          name="no_depths.mat")
    data_cases = {"nyuv2_directory": (path.parent, "is a directory"),
                  "nyuv2_no_depths": (no_depths, "lacks ['depths']")}
    for name, (target, message) in data_cases.items():
        cases[name] = ["--smoke", f"--dataset=nyuv2:{target}"]
        expected[name] = (message,)
    flag_cases = {
        "zero_task_weights": (["--seg_weight=0", "--depth_weight=0"],
                              "--seg_weight and --depth_weight are both 0"),
        "shared_levels_past_levels": (["--levels=2", "--shared_levels=3"],
                                      "--shared_levels must be at most --levels"),
        "dataset_kind": (["--dataset=csv:rooms.csv"], "--dataset must be synthetic"),
        "dataset_without_path": (["--dataset=npz:"], "--dataset must be synthetic"),
        "resolution": (["--resolution=288x"], "--resolution must be HxW"),
        "weighting": (["--weighting=equal"], "--weighting"),
        "depth_loss": (["--depth_loss=l2"], "--depth_loss"),
    }
    for name, (args, message) in flag_cases.items():
        cases[name] = ["--smoke", *args]
        expected[name] = (message,)
    for flag, value in BAD_FLAGS.items():
        cases[flag] = ["--smoke", f"--{flag}={value}"]
        expected[flag] = (f"--{flag} must be a finite number",)
    outcomes = bad_inputs(RECIPE, cases)
    for name, outcome in outcomes.items():
        assert outcome["status"] in (1, 2), (name, outcome)
        assert all(text in outcome["stderr"] for text in expected[name]), (name, outcome)
        assert outcome["written"] == [], (name, outcome)
    # data refused by the recipe (one line), flags by the parse
    for name in [*files, *data_cases]:
        assert outcomes[name]["status"] == 2, (name, outcomes[name])
        assert outcomes[name]["stderr"].strip().count("\n") == 0, outcomes[name]["stderr"]
    for name in [*flag_cases, *BAD_FLAGS]:
        assert outcomes[name]["status"] == 1, (name, outcomes[name])
