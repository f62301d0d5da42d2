"""Face embedding recipe: smoke runs (one device and 2-replica mirrored), the loaders on
files written here, P×K batches, both protocols against scikit-learn / NumPy brute
force, and each bad input of the issue."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from recipes.face_embedding import data, evaluate, synthetic

RECIPE = "face_embedding"
TRAIN_PY = Path(__file__).resolve().parents[2] / "recipes" / RECIPE / "train.py"


def default_command_args() -> list[str]:
    """The arguments of the command on the first line after the title of train.py."""
    doc = ast.get_docstring(ast.parse(TRAIN_PY.read_text()))
    command = next(line.strip() for line in doc.splitlines()[1:] if line.strip())
    assert command.startswith(f"python recipes/{RECIPE}/train.py"), command
    return command.split()[2:]


def write_tree(root: Path, counts: dict, size=(20, 24), suffix=".pgm", mode="L") -> dict:
    """One sub-folder per person with `counts[person]` images; returns the pixel arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for person, count in counts.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size[1], size[0]) + ((3,) if mode == "RGB" else ()))
        for index in range(1, count + 1):
            noise = rng.integers(-20, 21, base.shape)
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            name = f"{index}{suffix}" if suffix == ".pgm" else f"{person}_{index:04d}{suffix}"
            Image.fromarray(pixels, mode).save(root / person / name)
            arrays[(person, index)] = pixels
    return arrays


def results_snapshot(repository: Path) -> dict:
    folder = repository / "results" / RECIPE
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*")} if folder.exists() else {}


# ---------------------------------------------------------------- smoke runs


def test_smoke_one_device_and_mirrored(run_recipe):
    """The docstring's command with --smoke learns, on one device and on 2 replicas."""
    single = run_recipe(RECIPE, *default_command_args(), "--smoke", "--strategy=cpu")
    assert single.returncode == 0, single
    mirrored = run_recipe(RECIPE, *default_command_args(), "--smoke", "--strategy=mirrored",
                          "--num_cpu_devices=2")
    assert mirrored.returncode == 0, mirrored
    for run in (single, mirrored):
        record = run.record
        metrics, baselines = record["metrics"], record["baselines"]
        # 12 steps already beat the untrained network and the pixel baselines clearly.
        assert metrics["verification_accuracy"] > 0.65
        assert metrics["roc_auc"] > 0.72
        for name in ("raw_pixels", "pca", "untrained_network"):
            assert metrics["roc_auc"] > baselines[name]["roc_auc"] + 0.05, name
        assert (Path(run.model_dir) / "projection.png").stat().st_size > 0
        assert (Path(run.model_dir) / "mistakes.png").stat().st_size > 0
    assert mirrored.record["strategy"]["replicas"] == 2
    # The mining sees the whole global batch on 2 replicas: same first-epoch loss as one
    # device (mining per half batch would give another value).
    np.testing.assert_allclose(mirrored.record["history"][0]["loss"],
                               single.record["history"][0]["loss"], rtol=2e-3)

    # P×K stream resumed after a crash: the run ends with the uninterrupted run's weights.
    crash_dir = Path(single.model_dir).parent / "crashed"
    crashed = run_recipe(RECIPE, "--smoke", "--strategy=cpu", f"--model_dir={crash_dir}",
                         "--simulate_crash_at_step=8")
    assert crashed.returncode != 0 and crashed.record is None
    resumed = run_recipe(RECIPE, "--smoke", "--strategy=cpu", f"--model_dir={crash_dir}")
    assert resumed.returncode == 0, resumed
    assert "resuming" in resumed.stdout
    assert resumed.record["weights_fingerprint"] == single.record["weights_fingerprint"]

    # The record's pixel baseline against scikit-learn on the same split, recomputed here.
    faces = data.load("synthetic", None, 32, seed=42, smoke=True)
    test = data.split_unseen(faces.labels, 42)["test"]
    pixels, labels = faces.images[test].reshape(len(test), -1), faces.labels[test]
    _, neighbours = NearestNeighbors(n_neighbors=2).fit(pixels).kneighbors(pixels)
    recall = np.mean(labels[neighbours[:, 1]] == labels)
    assert single.record["baselines"]["raw_pixels"]["recall_at_1"] == pytest.approx(recall)
    assert single.record["dataset"]["test_images"] == len(test)


def test_per_identity_protocol_on_a_pgm_folder(run_recipe, tmp_path):
    """AT&T layout (s1/1.pgm ... s1/10.pgm), per_identity:2, against scikit-learn 1-NN."""
    root = tmp_path / "att"
    write_tree(root, {f"s{i}": 4 for i in range(1, 7)})
    run = run_recipe(RECIPE, f"--dataset=folder:{root}", "--protocol=per_identity:2",
                     "--image_size=16", "--global_batch_size=8", "--images_per_identity=2",
                     "--epochs=2", "--embedding_dim=8")
    assert run.returncode == 0, run
    record = run.record
    assert record["dataset"]["train_images"] == 12 and record["dataset"]["test_images"] == 12
    faces = data.load_folder(str(root), 16)
    index = data.split_per_identity(faces.labels, 2, faces.names)
    flat = faces.images.reshape(len(faces.labels), -1)
    knn = KNeighborsClassifier(n_neighbors=1).fit(flat[index["train"]],
                                                  faces.labels[index["train"]])
    error = 1.0 - knn.score(flat[index["test"]], faces.labels[index["test"]])
    assert record["baselines"]["raw_pixels"]["identification_error"] == pytest.approx(error)
    assert 0.0 <= record["metrics"]["identification_error"] <= 1.0


# ---------------------------------------------------------------- loaders


def test_folder_loader_reads_pgm_in_natural_order(tmp_path):
    arrays = write_tree(tmp_path, {"s1": 10, "s2": 3}, size=(20, 20))
    faces = data.load_folder(str(tmp_path), 20)
    assert faces.names == ["s1", "s2"]
    assert faces.images.shape == (13, 20, 20, 1) and faces.images.dtype == np.float32
    np.testing.assert_array_equal(faces.labels, [0] * 10 + [1] * 3)
    # Natural order: 1.pgm, 2.pgm, ..., 10.pgm (not 1, 10, 2, ...).
    np.testing.assert_allclose(faces.images[9, ..., 0], arrays[("s1", 10)] / 255.0, atol=1e-6)
    np.testing.assert_allclose(faces.images[1, ..., 0], arrays[("s1", 2)] / 255.0, atol=1e-6)


def test_folder_loader_lfw_layout_colour_crop_and_resize(tmp_path):
    write_tree(tmp_path, {"Ann_Lee": 2, "Bob_Ray": 3, "Cy_Oz": 1}, size=(30, 20),
               suffix=".png", mode="RGB")
    faces = data.load_folder(str(tmp_path), 8, color=True, min_images=2)
    assert faces.names == ["Ann_Lee", "Bob_Ray"]  # Cy_Oz has 1 image: dropped on request
    assert faces.images.shape == (5, 8, 8, 3)
    # Centre square crop then resize, as Pillow does it independently here.
    with Image.open(tmp_path / "Ann_Lee" / "Ann_Lee_0001.png") as image:
        expected = np.asarray(image.crop((5, 0, 25, 20)).resize((8, 8), Image.BILINEAR)) / 255
    np.testing.assert_allclose(faces.images[0], expected, atol=1e-6)


def test_olivetti_loader_reads_scikit_learn_cache(tmp_path):
    import joblib

    raw = np.random.default_rng(1).integers(0, 256, (400, 4096)).astype(np.uint8)
    joblib.dump(raw, tmp_path / "olivetti_py3.pkz", compress=6)
    faces = data.load_olivetti(str(tmp_path), 64)
    np.testing.assert_array_equal(faces.labels, np.arange(400) // 10)
    assert faces.names[0] == "s1" and faces.images.shape == (400, 64, 64, 1)
    scaled = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(faces.images[7, ..., 0], scaled[7].reshape(64, 64).T, atol=1e-6)


def test_lfw_loader_reads_a_local_lfw_home(tmp_path):
    home = tmp_path / "lfw_home"
    write_tree(home / "lfw_funneled", {"Ann_Lee": 2, "Bob_Ray": 3, "Cy_Oz": 1},
               size=(250, 250), suffix=".jpg", mode="RGB")
    for name in ("pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt"):
        (home / name).write_text("")
    faces = data.load_lfw(str(tmp_path), 16, min_images=2)
    assert faces.names == ["Ann Lee", "Bob Ray"]
    np.testing.assert_array_equal(faces.labels, [0, 0, 1, 1, 1])
    assert faces.images.shape == (5, 16, 16, 1)


@pytest.mark.parametrize("dataset, expected", [("olivetti", "olivetti_py3.pkz"),
                                               ("lfw", "lfw-funneled.tgz")])
def test_offline_loaders_say_where_to_put_the_files(tmp_path, dataset, expected):
    with pytest.raises(FileNotFoundError) as error:
        data.load(dataset, str(tmp_path), 32)
    message = str(error.value)
    assert expected in message and str(tmp_path) in message


def test_synthetic_is_deterministic_and_identities_keep_their_shape():
    images, labels = synthetic.render(5, 3, 32, seed=3)
    again, _ = synthetic.render(5, 3, 32, seed=3)
    np.testing.assert_array_equal(images, again)
    assert images.shape == (15, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert not np.array_equal(images, synthetic.render(5, 3, 32, seed=4)[0])
    first, second = synthetic.identities(10, 3), synthetic.identities(10, 3)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(5), 3))


# ---------------------------------------------------------------- P×K batches


def test_pk_stream_is_class_balanced_and_a_function_of_seed_and_step():
    labels = np.repeat(np.arange(10), [3, 4, 5, 3, 6, 3, 4, 3, 5, 3]).astype(np.int32)
    images = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1)
    stream = data.pk_stream(images, labels, 4, 3, seed=5)
    batches = [(x.numpy().ravel().astype(int), y.numpy()) for x, y in stream.take(6)]
    for index, batch_labels in batches:
        np.testing.assert_array_equal(labels[index], batch_labels)
        groups = batch_labels.reshape(4, 3)
        assert (groups == groups[:, :1]).all()  # K contiguous images of one identity
        assert len(np.unique(groups[:, 0])) == 4  # P distinct identities
        assert all(len(set(row)) == 3 for row in index.reshape(4, 3))  # distinct images
    resumed = next(iter(data.pk_stream(images, labels, 4, 3, seed=5, first_step=4)))
    np.testing.assert_array_equal(resumed[0].numpy().ravel(), batches[4][0])
    other = next(iter(data.pk_stream(images, labels, 4, 3, seed=6)))
    assert not np.array_equal(other[0].numpy().ravel(), batches[0][0])


def test_pk_stream_splits_into_whole_identities_per_replica(mirrored_strategy):
    labels = np.repeat(np.arange(8), 4).astype(np.int32)
    images = np.zeros((32, 2, 2, 1), np.float32)
    stream = data.pk_stream(images, labels, 4, 2, seed=0)
    global_labels = next(iter(stream))[1].numpy()
    distributed = next(iter(mirrored_strategy.experimental_distribute_dataset(stream)))
    slices = [t.numpy() for t in mirrored_strategy.experimental_local_results(distributed[1])]
    assert len(slices) == 2
    np.testing.assert_array_equal(np.concatenate(slices), global_labels)
    for part in slices:  # each replica: 2 identities x 2 images
        assert len(part) == 4 and len(np.unique(part)) == 2
        assert (np.bincount(part)[np.unique(part)] == 2).all()


# ---------------------------------------------------------------- evaluation


def test_unseen_identities_metrics_against_brute_force():
    rng = np.random.default_rng(2)
    val_labels, test_labels = np.repeat(np.arange(6), 4), np.repeat(np.arange(6, 14), 3)
    centres = rng.normal(size=(14, 5))
    val = centres[val_labels] + 0.8 * rng.normal(size=(24, 5))
    test = centres[test_labels] + 0.8 * rng.normal(size=(24, 5))
    metrics, details = evaluate.unseen_identities((val, val_labels), (test, test_labels), 0)

    # Pairs: half same, half different, labels right, no pair twice.
    same, first, second = details["same"], details["first"], details["second"]
    assert same.sum() == len(same) // 2 == 8 * 3  # all C(3, 2) pairs of each of 8 people
    np.testing.assert_array_equal(same, test_labels[first] == test_labels[second])
    assert len({(a, b) for a, b in zip(first, second)}) == len(first)
    # Threshold: the best accuracy over every candidate threshold on the validation pairs.
    vf, vs, vsame = evaluate.balanced_pairs(val_labels, 0)
    val_d = np.array([np.linalg.norm(val[a] - val[b]) for a, b in zip(vf, vs)])
    best = max(np.mean((val_d < t) == vsame) for t in np.concatenate([val_d, val_d + 1e-9]))
    assert np.mean((val_d < metrics["threshold"]) == vsame) == pytest.approx(best)
    # Accuracy, ROC-AUC (Mann-Whitney count) and recall@1 by brute force.
    d = np.array([np.linalg.norm(test[a] - test[b]) for a, b in zip(first, second)])
    assert metrics["verification_accuracy"] == pytest.approx(np.mean((d < metrics["threshold"])
                                                                     == same))
    pos, neg = d[same], d[~same]
    auc = np.mean([(p < n) + 0.5 * (p == n) for p in pos for n in neg])
    assert metrics["roc_auc"] == pytest.approx(auc)
    hits = [test_labels[min((j for j in range(24) if j != i),
                            key=lambda j: np.linalg.norm(test[i] - test[j]))] == test_labels[i]
            for i in range(24)]
    assert metrics["recall_at_1"] == pytest.approx(np.mean(hits))


def test_per_identity_metric_and_pca_baseline_against_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 6)
    images = (rng.normal(size=(5, 6, 6, 1))[labels] + rng.normal(size=(30, 6, 6, 1))).astype(
        np.float32)
    split = data.split_per_identity(labels, 2, [f"p{i}" for i in range(5)])
    np.testing.assert_array_equal(split["train"][:4], [0, 1, 6, 7])  # the first 2 of each
    chosen = {name: images[split[name]] for name in ("train", "test")}
    embedded = evaluate.baseline_embeddings(chosen["train"], chosen, 4)
    reference = PCA(4).fit(chosen["train"].reshape(10, -1))
    np.testing.assert_allclose(np.abs(embedded["pca"]["test"]),
                               np.abs(reference.transform(chosen["test"].reshape(20, -1))),
                               atol=1e-4)
    metrics, _ = evaluate.per_identity((embedded["pca"]["train"], labels[split["train"]]),
                                       (embedded["pca"]["test"], labels[split["test"]]))
    knn = KNeighborsClassifier(1).fit(embedded["pca"]["train"], labels[split["train"]])
    expected = 1 - knn.score(embedded["pca"]["test"], labels[split["test"]])
    assert metrics["identification_error"] == pytest.approx(expected)


def test_identity_interval_matches_the_binomial_over_identities():
    """Items of one identity move together: the interval is that of a proportion over
    the 100 identities (± 1.96·sqrt(p(1 − p)/100)), not over the 300 images."""
    labels = np.repeat(np.arange(100), 3)
    correct = labels < 30  # identities 0..29 always right, the others always wrong
    low, high = evaluate.identity_interval(correct, labels, labels, seed=0, resamples=4000)
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / 100)
    assert low == pytest.approx(0.3 - half_width, abs=0.02)
    assert high == pytest.approx(0.3 + half_width, abs=0.02)


def test_roc_auc_of_random_embeddings_is_chance():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(40), 5)
    embeddings = rng.normal(size=(200, 16))
    metrics, _ = evaluate.unseen_identities((embeddings, labels), (embeddings, labels), 1)
    assert abs(metrics["roc_auc"] - 0.5) < 0.05


# ---------------------------------------------------------------- bad input


def test_bad_inputs_fail_clearly_and_publish_nothing(run_recipe, tmp_path, repository):
    before = results_snapshot(repository)
    cases = []
    one = tmp_path / "one"
    write_tree(one, {"s1": 3})
    cases.append(([f"--dataset=folder:{one}"], "1 identity found"))
    single = tmp_path / "single"
    write_tree(single, {"s1": 3, "s2": 3, "lonely": 1})
    cases.append(([f"--dataset=folder:{single}"], "lonely has fewer than 2 images"))
    broken = tmp_path / "broken"
    write_tree(broken, {"s1": 3, "s2": 3})
    (broken / "s2" / "4.pgm").write_bytes(b"not an image")
    cases.append(([f"--dataset=folder:{broken}"], str(broken / "s2" / "4.pgm")))
    small = tmp_path / "small"
    write_tree(small, {f"s{i}": 3 for i in range(1, 11)})
    cases.append(([f"--dataset=folder:{small}", "--global_batch_size=32",
                   "--images_per_identity=4"], "P=8 identities per batch"))
    cases.append(([f"--dataset=folder:{small}", "--protocol=per_identity:1",
                   "--global_batch_size=8", "--images_per_identity=2"],
                  "--images_per_identity=2 but training identity s1 has only 1 images"))
    cases.append((["--dataset=olivetti", f"--data_dir={tmp_path}"], "olivetti_py3.pkz"))
    for args, expected in cases:
        run = run_recipe(RECIPE, *args, "--image_size=8", "--publish")
        assert run.returncode != 0, (args, run)
        assert expected in run.stderr, (args, run.stderr[-1500:])
        assert "Traceback" not in run.stderr, run.stderr[-1500:]
        assert run.record is None
    assert results_snapshot(repository) == before


@pytest.mark.parametrize("flag, expected", [
    ("--protocol=per_identity:x", "--protocol must be"),
    ("--dataset=imagenet", "--dataset must be"),
])
def test_bad_flags_fail_at_parse(run_recipe, flag, expected):
    run = run_recipe(RECIPE, flag)
    assert run.returncode != 0 and re.search(re.escape(expected), run.stderr), run.stderr[-800:]
