"""Tests of recipes/depth_segmentation: renderer, NYUv2 loader, metrics, train step, CLI."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from scipy import io as scipy_io
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from recipes.depth_segmentation import data, metrics, model, scenes

REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN = REPOSITORY / "recipes" / "depth_segmentation" / "train.py"
PUBLISHED = REPOSITORY / "results" / "depth_segmentation"


def run_train(model_dir: Path, *args: str, cwd: Path | None = None):
    """`python train.py args` in a fresh process; (completed process, record or None)."""
    completed = subprocess.run(
        [sys.executable, str(TRAIN), *args, f"--model_dir={model_dir}"],
        cwd=cwd or model_dir.parent, capture_output=True, text=True, timeout=600,
        env=dict(os.environ))
    path = model_dir / "results.json"
    return completed, (json.loads(path.read_text()) if path.exists() else None)


def docstring_command() -> list[str]:
    """The command on the first line after the title of train.py's docstring."""
    lines = [line.strip() for line in TRAIN.read_text().split('"""')[1].splitlines()]
    command = shlex.split(next(line for line in lines if line.startswith("python ")))
    assert command[:2] == ["python", "recipes/depth_segmentation/train.py"], command
    return command[2:]


# Smoke bars (12 steps): better than the majority class (pixel accuracy 0.43 on the smoke
# test rooms) and than the training median depth everywhere (AbsRel 0.53, δ<1.25 0.23).
def beats_trivial(found: dict) -> bool:
    return found["pixel_accuracy"] > 0.48 and found["abs_rel"] < 0.5 and found["delta1"] > 0.28


def model_rows(record, name):
    return [entry for entry in record["history"] if entry.get("model") == name]


# ------------------------------------------------------------------------------ renderer

def test_objects_occlude_the_room_and_floor_depth_matches_the_camera_model():
    rng = np.random.default_rng(3)
    for _ in range(5):
        scene = scenes.random_scene(rng)
        _, depth, labels = scenes.render(scene, 64)
        _, room_depth, room_labels = scenes.render({**scene, "objects": []}, 64)
        objects = labels >= 3
        assert objects.any()
        # A labelled object pixel is nearer than the room surface behind it ...
        assert (depth[objects] < room_depth[objects]).all()
        # ... and everywhere else the room is what the camera sees.
        np.testing.assert_array_equal(depth[~objects], room_depth[~objects])
        np.testing.assert_array_equal(labels[~objects], room_labels[~objects])
        # Floor pixels: depth of the ray hitting y = 0, derived here independently.
        focal, centre = 0.9 * 64, 31.5
        v, _ = np.mgrid[0:64, 0:64]
        y_camera = -(v - centre) / focal
        pitch = scene["pitch"]
        world_y = np.cos(pitch) * y_camera + np.sin(pitch)  # z_camera = 1
        floor = room_labels == 0
        expected = scene["camera"][1] / -world_y[floor]
        np.testing.assert_allclose(room_depth[floor], expected, rtol=1e-5)


def test_synthetic_data_is_fixed_by_its_seed():
    first, again, other = (scenes.synthetic(12, 64, seed=s) for s in (5, 5, 6))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["images"], other["images"])
    assert first["images"].dtype == np.uint8 and first["images"].shape == (12, 64, 64, 3)
    assert first["labels"].min() >= 0 and first["labels"].max() < len(scenes.SCENE_CLASSES)
    assert (first["depths"] == 0).any() and (first["depths"] > 0).mean() > 0.9
    data.validate(first["images"], first["depths"], first["labels"], 6, "synthetic")


# ------------------------------------------------------------------------------ NYUv2

def write_nyu(path: Path, images, depths, labels, keys=("images", "depths", "labels")):
    """A file laid out as MATLAB v7.3 stores nyu_depth_v2_labeled.mat (transposed)."""
    with h5py.File(path, "w") as file:
        arrays = {"images": images.transpose(0, 3, 2, 1), "depths": depths.transpose(0, 2, 1),
                  "labels": labels.transpose(0, 2, 1)}
        for key in keys:
            file[key] = arrays[key]


def write_mapping(path: Path, map_894_to_40: np.ndarray):
    scipy_io.savemat(path, {"mapClass": map_894_to_40.reshape(1, -1).astype(np.float64)})


@pytest.fixture
def nyu_file(tmp_path):
    rng = np.random.default_rng(0)
    n, h, w = 6, 96, 128
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    depths[:, :4] = 0.0
    labels = rng.integers(0, 895, (n, h, w)).astype(np.uint16)
    mapping = rng.integers(1, 41, 894)
    mapping[:3] = [1, 5, 25]  # raw 1 -> wall, 2 -> chair, 3 -> television
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    write_nyu(path, images, depths, labels)
    write_mapping(tmp_path / "classMapping40.mat", mapping)
    return path, images, depths, labels, mapping


def test_nyu40_to_13_keeps_the_classes_both_splits_name():
    names40 = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
               "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
               "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
               "refrigerator", "tv", "paper", "towel", "shower curtain", "box", "whiteboard",
               "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag",
               "other structure", "other furniture", "other prop"]
    assert len(data.NYU40_TO_13) == 40
    for index, name in enumerate(names40):
        if name in data.NYU13_CLASSES:
            assert data.NYU13_CLASSES[data.NYU40_TO_13[index] - 1] == name
    assert data.NYU13_CLASSES[data.NYU40_TO_13[names40.index("other prop")] - 1] == "objects"


def test_nyuv2_loader_transposes_maps_and_downsamples(nyu_file):
    path, images, depths, labels, mapping = nyu_file
    loaded = data.load_nyuv2(str(path), downsample=2, multiple=16)
    assert loaded["images"].shape == (6, 48, 64, 3)
    # RGB: mean of each 2x2 block; depth and labels: the pixel at offset 1 of the block.
    expected_rgb = images.reshape(6, 48, 2, 64, 2, 3).mean((2, 4)).round()
    np.testing.assert_array_equal(loaded["images"], expected_rgb.astype(np.uint8))
    np.testing.assert_array_equal(loaded["depths"], depths[:, 1::2, 1::2])
    raw = labels[:, 1::2, 1::2].astype(int)
    expected = np.where(raw == 0, -1, 0)
    for r in np.unique(raw[raw > 0]):
        expected[raw == r] = data.NYU40_TO_13[mapping[r - 1] - 1] - 1
    np.testing.assert_array_equal(loaded["labels"], expected)
    # the three known raw ids, by name
    names = {1: "wall", 2: "chair", 3: "tv"}
    for r, name in names.items():
        where = raw == r
        if where.any():
            assert (loaded["labels"][where] == data.NYU13_CLASSES.index(name)).all()
    assert (loaded["labels"][raw == 0] == -1).all()


def test_nyuv2_loader_crops_to_the_unet_multiple(tmp_path, nyu_file):
    path, *_ = nyu_file
    loaded = data.load_nyuv2(str(path), downsample=4, multiple=16)  # 24x32 -> 16x32
    assert loaded["images"].shape[1:3] == (16, 32)


# ------------------------------------------------------------------------------ metrics

def test_segmentation_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 5, (7, 9, 11))
    predictions = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 5, labels.shape))
    predictions = np.clip(predictions, 0, 4)
    per_image = metrics.per_image_confusion(labels, predictions, num_classes=6)
    keep = labels.ravel() >= 0
    t, p = labels.ravel()[keep], predictions.ravel()[keep]
    np.testing.assert_array_equal(per_image.sum(0), confusion_matrix(t, p, labels=range(6)))
    found = metrics.segmentation_metrics(per_image.sum(0))
    # class 5 occurs nowhere: left out of the mean, as jaccard_score over present labels
    assert np.isnan(found["iou_per_class"][5])
    assert found["miou"] == pytest.approx(jaccard_score(t, p, labels=range(5), average="macro"))
    np.testing.assert_allclose(found["iou_per_class"][:5],
                               jaccard_score(t, p, labels=range(5), average=None))
    assert found["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))


def test_depth_metrics_match_numpy_and_do_not_depend_on_batching():
    rng = np.random.default_rng(2)
    true = rng.uniform(0.5, 10, (6, 8, 8))
    true[rng.random(true.shape) < 0.2] = 0.0
    predicted = true * rng.uniform(0.7, 1.4, true.shape) + rng.normal(0, 0.1, true.shape)
    predicted = np.abs(predicted) + 0.01
    valid = true > 0
    t, p = true[valid], predicted[valid]
    expected = {"abs_rel": np.mean(np.abs(p - t) / t), "rmse": np.sqrt(np.mean((p - t) ** 2)),
                "delta1": np.mean(np.maximum(p / t, t / p) < 1.25)}
    whole = metrics.depth_metrics(metrics.per_image_depth_sums(true, predicted))
    halves = np.concatenate([metrics.per_image_depth_sums(true[:2], predicted[:2]),
                             metrics.per_image_depth_sums(true[2:], predicted[2:])])
    for name, value in expected.items():
        assert whole[name] == pytest.approx(value, rel=1e-12)
        assert metrics.depth_metrics(halves)[name] == pytest.approx(value, rel=1e-12)


def test_paired_bootstrap_interval_holds_the_difference():
    rng = np.random.default_rng(4)
    sums = np.stack([np.full(40, 100.0), rng.uniform(5, 15, 40), rng.uniform(50, 150, 40),
                     rng.uniform(60, 90, 40)], axis=1)
    better = sums.copy()
    better[:, 1] *= 0.5  # half the AbsRel on every image
    def abs_rel(s):
        return metrics.depth_metrics(s)["abs_rel"]
    low, high = metrics.paired_bootstrap(sums, better, abs_rel, seed=0, samples=300)
    exact = abs_rel(sums.sum(0)) - abs_rel(better.sum(0))
    assert 0 < low <= exact <= high
    assert metrics.paired_bootstrap(sums, sums, abs_rel, samples=50) == (0.0, 0.0)


# ------------------------------------------------------------------------------ train step

def _step_weights(strategy, weighting, images, targets, initial):
    with strategy.scope():
        network = model.build(4, base_filters=4, levels=1, weighting=weighting,
                              depth_loss="berhu", cross_entropy_weight=0.5)
        network.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    if initial is not None:
        for variable, value in zip(network.trainable_variables, initial):
            variable.assign(value)
    start = [variable.numpy() for variable in network.trainable_variables]
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat(2)
    network.fit(dataset, epochs=1, verbose=0)
    return start, [variable.numpy() for variable in network.trainable_variables]


@pytest.mark.parametrize("weighting", ["uncertainty", "static"])
def test_two_replicas_take_the_one_device_step(mirrored_strategy, weighting):
    """Per-task means, the s_k/2 term and berHu's batch threshold scale exactly."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    targets = {"labels": rng.integers(-1, 4, (4, 16, 16)).astype(np.int32),
               "depth": np.where(rng.random((4, 16, 16)) < 0.1, 0,
                                 rng.uniform(1, 5, (4, 16, 16))).astype(np.float32)}
    tf.keras.utils.set_random_seed(0)
    start, one_device = _step_weights(tf.distribute.get_strategy(), weighting, images,
                                      targets, None)
    _, two_replicas = _step_weights(mirrored_strategy, weighting, images, targets, start)
    moved = [np.abs(after - before).max() for before, after in zip(start, one_device)]
    assert min(moved) > 0  # every variable trained, the log-variances included
    if weighting == "uncertainty":
        assert any(v.shape == (2,) for v in start)
    for expected, got in zip(one_device, two_replicas):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ CLI runs

@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """The docstring command with --smoke, uncertainty weighting and the baselines."""
    model_dir = tmp_path_factory.mktemp("one_device") / "run"
    return run_train(model_dir, *docstring_command(), "--smoke", "--weighting=uncertainty")


def test_smoke_one_device_trains_all_three_networks(one_device_run):
    completed, record = one_device_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert record["strategy"]["replicas"] == 1
    found = record["metrics"]
    assert beats_trivial(found), found
    assert set(record["baselines"]) == {"segmentation_only", "depth_only"}
    assert beats_trivial({**record["baselines"]["segmentation_only"],
                          **record["baselines"]["depth_only"]}), record["baselines"]
    for metric in ("miou", "abs_rel"):
        assert found[f"{metric}_gain_ci_low"] <= found[f"{metric}_gain"] <= \
            found[f"{metric}_gain_ci_high"]
    rows = model_rows(record, "multi_task")
    assert len(rows) == 3
    for row in rows:  # uncertainty weighting logs the weights it learns, every epoch
        for task in ("segmentation", "depth"):
            assert row[f"weight_{task}"] == pytest.approx(
                0.5 * np.exp(-row[f"log_variance_{task}"]), rel=1e-5)
    assert rows[-1]["log_variance_depth"] != 0.0
    assert "multi-task vs single-task" in record["tables"]
    run_dir = Path(completed.args[-1].split("=", 1)[1])
    assert (run_dir / "predictions.png").stat().st_size > 10_000
    assert (run_dir / "training.png").exists()


def test_smoke_two_replicas_matches_one_device(one_device_run, tmp_path):
    completed, record = run_train(tmp_path / "run", "--smoke", "--weighting=uncertainty",
                                  "--nobaselines", "--strategy=mirrored",
                                  "--num_cpu_devices=2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert record["strategy"]["replicas"] == 2
    assert beats_trivial(record["metrics"]), record["metrics"]
    single = model_rows(one_device_run[1], "multi_task")
    for mirrored, one in zip(model_rows(record, "multi_task"), single):
        for key in ("segmentation_loss", "depth_loss", "log_variance_depth"):
            assert mirrored[key] == pytest.approx(one[key], rel=2e-3), key


def test_dwa_weights_follow_the_logged_losses_and_survive_a_crash(tmp_path):
    args = ["--smoke", "--weighting=dwa", "--nobaselines", "--depth_loss=silog"]
    completed, record = run_train(tmp_path / "whole", *args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = model_rows(record, "multi_task")
    assert [r["weight_segmentation"] for r in rows[:2]] == [1.0, 1.0]
    # λ_k = K·softmax(w / T), w_k = L_k(t-1) / L_k(t-2), T = 2 (Liu et al. 2019)
    ratios = np.array([rows[1][f"{t}_loss"] / rows[0][f"{t}_loss"]
                       for t in ("segmentation", "depth")])
    expected = 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    assert [rows[2]["weight_segmentation"], rows[2]["weight_depth"]] == \
        pytest.approx(expected, rel=1e-5)
    # Crash in epoch 3, resume: same λ and same final weights as the uninterrupted run.
    crashed, _ = run_train(tmp_path / "resumed", *args, "--simulate_crash_at_step=9")
    assert crashed.returncode != 0
    resumed, again = run_train(tmp_path / "resumed", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert model_rows(again, "multi_task")[-1]["weight_depth"] == pytest.approx(
        rows[-1]["weight_depth"], rel=1e-6)
    assert again["weights_fingerprint"] == record["weights_fingerprint"]


def test_nyuv2_smoke_on_a_tiny_file(nyu_file, tmp_path):
    path, *_ = nyu_file
    completed, record = run_train(tmp_path / "run", f"--dataset=nyuv2:{path}", "--smoke",
                                  "--nobaselines", "--downsample=2", "--global_batch_size=2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert record["dataset"]["classes"] == list(data.NYU13_CLASSES)
    assert record["dataset"]["image_size"] == [48, 64]
    assert record["references"]  # the published NYUv2 numbers travel with the record


def _npz(path, **changes):
    arrays = scenes.synthetic(4, 32, seed=0)
    arrays.update(changes)
    np.savez(path, **arrays)
    return f"--dataset=npz:{path}"


def _not_hdf5(folder):
    write_mapping(folder / "classMapping40.mat", np.ones(894, int))
    (folder / "x.mat").write_text("not a MATLAB file")
    return [f"--dataset=nyuv2:{folder / 'x.mat'}"]


BAD_INPUTS = {  # case: (arguments made in a folder, what the error must say)
    "class_out_of_range": (lambda p: [_npz(p / "a.npz"), "--num_classes=3"], "class ids"),
    "nan_depth": (lambda p: [_npz(p / "a.npz", depths=np.full((4, 32, 32), np.nan, np.float32))],
                  "NaN"),
    "sizes_disagree": (lambda p: [_npz(p / "a.npz", labels=np.zeros((4, 16, 32), np.int32))],
                       "disagree"),
    "missing_file": (lambda p: [f"--dataset=nyuv2:{p / 'absent.mat'}"], "no file"),
    "malformed_file": (_not_hdf5, "not a readable MATLAB v7.3 / HDF5 file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_clearly_and_publishes_nothing(case, tmp_path):
    make_args, message = BAD_INPUTS[case]
    before = sorted(PUBLISHED.glob("*")) if PUBLISHED.exists() else []
    completed, record = run_train(tmp_path / "run", *make_args(tmp_path), "--smoke",
                                  "--publish")
    assert completed.returncode != 0
    assert message in completed.stderr, completed.stderr[-2000:]
    assert record is None
    after = sorted(PUBLISHED.glob("*")) if PUBLISHED.exists() else []
    assert after == before


def test_malformed_nyu_files_are_named(tmp_path, nyu_file):
    path, images, depths, labels, mapping = nyu_file
    folder = path.parent
    (folder / "text.mat").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable"):
        data.load_nyuv2(str(folder / "text.mat"))
    write_nyu(folder / "nolabels.mat", images, depths, labels, keys=("images", "depths"))
    with pytest.raises(ValueError, match="missing dataset"):
        data.load_nyuv2(str(folder / "nolabels.mat"))
    write_nyu(folder / "nan.mat", images, np.where(depths > 5, np.nan, depths), labels)
    with pytest.raises(ValueError, match="NaN"):
        data.load_nyuv2(str(folder / "nan.mat"))
    write_nyu(folder / "size.mat", images, depths[:, :-8], labels)
    with pytest.raises(ValueError, match="disagree"):
        data.load_nyuv2(str(folder / "size.mat"))
    write_mapping(folder / "classMapping40.mat", np.arange(100))
    with pytest.raises(ValueError, match="894"):
        data.load_nyuv2(str(path))
