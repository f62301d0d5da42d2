"""Face embedding recipe: smoke runs in this process (one device, 2-replica mirrored,
crash and resume, --init_from), the kept model in a fresh process, the loaders on files
of each layout written here, P x K batches and augmentation, the protocols and baselines
against scikit-learn / NumPy brute force, references from the data, and each bad input
(one real command line for the exit status of a refused flag)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier

from recipes.face_embedding import augment, data, evaluate, protocols, report, synthetic

RECIPE = "face_embedding"
FOLDER = Path(__file__).resolve().parents[2] / "recipes" / RECIPE
TRAIN_PY = FOLDER / "train.py"


def default_command_args() -> list[str]:
    """The arguments of the command on the first line after the title of train.py."""
    doc = ast.get_docstring(ast.parse(TRAIN_PY.read_text()))
    command = next(line.strip() for line in doc.splitlines()[1:] if line.strip())
    assert command.startswith(f"python recipes/{RECIPE}/train.py"), command
    return command.split()[2:]


def write_tree(root: Path, counts: dict, size=(20, 24), suffix=".pgm", mode="L") -> dict:
    """One sub-folder per person (AT&T `s1/1.pgm`, or LFW `Name/Name_0001.jpg`) with
    `counts[person]` images of `size` (width, height); returns the pixel arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for person, count in counts.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size[1], size[0]) + ((3,) if mode == "RGB" else ()))
        for index in range(1, count + 1):
            pixels = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
            name = f"{index}{suffix}" if suffix == ".pgm" else f"{person}_{index:04d}{suffix}"
            Image.fromarray(pixels, mode).save(root / person / name)
            arrays[(person, index)] = pixels
    return arrays


def write_yale(root: Path, people: int, conditions=("glasses", "happy", "normal", "sad")):
    """Yale's flat layout: GIF files named subjectNN.condition without an extension."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for person in range(1, people + 1):
        for condition in conditions:
            pixels = rng.integers(0, 256, (30, 40)).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"subject{person:02d}.{condition}", format="GIF")
    (root / "Readme.txt").write_text("not a face")


# ---------------------------------------------------------------- runs


def test_smoke_mirrored_resume_and_the_kept_model(train_recipe, tmp_path):
    """The docstring's command with --smoke learns on one device and on 2 replicas (the
    same first-epoch loss: mining over the global batch); a crashed run resumes to the
    same weights; model.keras and the SavedModel reproduce the run's embeddings in a
    fresh process."""
    # Without dropout: its masks are drawn per replica, so only then must the losses agree.
    single = train_recipe(RECIPE, *default_command_args(), "--smoke", "--strategy=cpu",
                        "--dropout=0")
    assert single.returncode == 0, single
    mirrored = train_recipe(RECIPE, *default_command_args(), "--smoke", "--strategy=mirrored",
                          "--num_cpu_devices=2", "--dropout=0")
    assert mirrored.returncode == 0, mirrored
    for run in (single, mirrored):
        metrics, baselines = run.record["metrics"], run.record["baselines"]
        # 20 steps already beat the untrained network and the pixels.
        for name in ("raw_pixels", "pca", "raw_pixels_native", "untrained_network"):
            assert metrics["roc_auc"] > baselines[name]["roc_auc"] + 0.02, name
        assert (Path(run.model_dir) / "mistakes.png").stat().st_size > 0
    assert mirrored.record["strategy"]["replicas"] == 2
    # Semi-hard mining makes discrete choices, so float-order differences between one
    # device and 2 replicas grow over 10 steps; mining per half batch is farther off.
    np.testing.assert_allclose(mirrored.record["history"][0]["loss"],
                               single.record["history"][0]["loss"], rtol=1e-2)

    crash_dir = tmp_path / "crashed"
    crashed = train_recipe(RECIPE, "--smoke", "--strategy=cpu", f"--model_dir={crash_dir}",
                           "--dropout=0", "--simulate_crash_at_step=15", "--backup_seconds=0")
    assert crashed.returncode == "traceback" and crashed.record is None, crashed
    assert "simulated crash" in crashed.stderr.lower(), crashed.stderr[-1500:]
    resumed = train_recipe(RECIPE, "--smoke", "--strategy=cpu", f"--model_dir={crash_dir}",
                           "--dropout=0")
    assert resumed.returncode == 0, resumed
    assert "resuming" in resumed.stdout
    assert resumed.record["weights_fingerprint"] == single.record["weights_fingerprint"]

    # A fine-tuning run starts from the smoke run's weights: its "untrained" network is
    # the smoke run's network, so it scores exactly what that network scored.
    tuned = train_recipe(RECIPE, "--smoke", "--strategy=cpu", "--dropout=0",
                         f"--init_from={single.model_dir}")
    assert tuned.returncode == 0, tuned
    for name in ("roc_auc", "recall_at_1"):
        assert tuned.record["baselines"]["untrained_network"][name] == pytest.approx(
            single.record["metrics"][name])

    model_dir = Path(single.model_dir)
    assert set(single.record["models"]["model"].values()) == {"model.keras", "saved_model"}
    check = """
import sys, numpy as np, common.models, tensorflow as tf
saved = np.load(sys.argv[1] + "/test_embeddings.npz")
keras = common.models.load_model(sys.argv[1] + "/model.keras")  # safe mode: as --init_from
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
np.testing.assert_allclose(keras.predict(saved["images"], verbose=0), saved["embeddings"],
                           rtol=1e-5, atol=1e-6)
out = serve(image=tf.constant(saved["images"]))["embedding"].numpy()
np.testing.assert_allclose(out, saved["embeddings"], rtol=1e-5, atol=1e-6)
print("reproduced", len(out))
"""
    fresh = subprocess.run([sys.executable, "-c", check, str(model_dir)], capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0 and "reproduced 32" in fresh.stdout, fresh.stderr[-2000:]


def test_per_identity_on_an_att_folder_against_scikit_learn(train_recipe, tmp_path):
    """AT&T layout at its own size, per_identity:2: the record's classic baselines are
    scikit-learn's 1-NN on the same pixels; *_native at 2x the input size."""
    root = tmp_path / "att"
    write_tree(root, {f"s{i}": 4 for i in range(1, 7)}, size=(24, 28))
    run = train_recipe(RECIPE, f"--dataset=folder:{root}", "--protocol=per_identity:2",
                       "--image_size=12x14", "--global_batch_size=8", "--images_per_identity=2",
                       "--epochs=1", "--steps_per_epoch=3", "--embedding_dim=8")
    assert run.returncode == 0, run
    record = run.record
    assert record["dataset"]["native_size"] == [24, 28]
    assert record["dataset"]["input_size"] == [12, 14, 1]
    for size, suffix in (((12, 14), ""), (None, "_native")):
        faces = data.load_folder(str(root), size)
        labels = faces.labels
        flat = faces.images.reshape(len(labels), -1)
        train, test = np.arange(24) % 4 < 2, np.arange(24) % 4 >= 2
        knn = KNeighborsClassifier(n_neighbors=1).fit(flat[train], labels[train])
        error = 1.0 - knn.score(flat[test], labels[test])
        assert record["baselines"]["raw_pixels" + suffix]["identification_error"] == \
            pytest.approx(error)
    assert 0.0 <= record["metrics"]["identification_error"] <= 1.0
    assert "identification_error_ci_low" in record["metrics"]
    assert record["headline"] == "identification_error"
    # Not a known face set: no published numbers, the source is only the flag.
    assert record["references"] == []
    assert record["dataset"]["source"] == f"--dataset=folder:{root}"


def test_kfold_runs_one_network_per_fold_with_leave_one_out_baselines(train_recipe, tmp_path):
    root = tmp_path / "yale"
    write_yale(root, 4)
    run = train_recipe(RECIPE, f"--dataset=folder:{root}", "--protocol=kfold:2",
                       "--global_batch_size=8", "--images_per_identity=2", "--epochs=1",
                       "--steps_per_epoch=2", "--embedding_dim=8")
    assert run.returncode == 0, run
    assert {line["model"] for line in run.record["history"]} == {"fold1", "fold2"}
    assert "raw_pixels_leave_one_out" in run.record["baselines"]
    # Leave-one-out raw pixels by brute force: each image against all 15 others.
    faces = data.load_folder(str(root), None)
    flat = faces.images.reshape(16, -1).astype(np.float64)
    table = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    np.fill_diagonal(table, np.inf)
    error = np.mean(faces.labels[table.argmin(1)] != faces.labels)
    assert run.record["baselines"]["raw_pixels_leave_one_out"]["identification_error"] == \
        pytest.approx(error)


# ---------------------------------------------------------------- loaders


def test_att_layout_natural_order_and_own_size(tmp_path):
    arrays = write_tree(tmp_path, {"s1": 10, "s2": 3}, size=(20, 24))
    (tmp_path / "README").write_text("AT&T's archive has one beside the folders")
    faces = data.load_folder(str(tmp_path), None)
    assert faces.names == ["s1", "s2"] and faces.places[1] == str(tmp_path / "s2")
    assert faces.images.shape == (13, 24, 20, 1) and faces.native is not None
    np.testing.assert_array_equal(faces.labels, [0] * 10 + [1] * 3)
    # Natural order: 1.pgm, 2.pgm, ..., 10.pgm (not 1, 10, 2, ...), pixels / 255 exactly.
    np.testing.assert_allclose(faces.images[9, ..., 0], arrays[("s1", 10)] / 255.0, atol=1e-6)
    np.testing.assert_allclose(faces.images[1, ..., 0], arrays[("s1", 2)] / 255.0, atol=1e-6)


def test_yale_flat_layout_without_extensions(tmp_path):
    write_yale(tmp_path / "yale", 3)
    faces = data.load_folder(str(tmp_path / "yale"), (20, 15))
    assert faces.names == ["subject01", "subject02", "subject03"]
    np.testing.assert_array_equal(faces.labels, np.repeat([0, 1, 2], 4))
    assert faces.images.shape == (12, 15, 20, 1) and faces.native.shape == (12, 30, 40, 1)
    with Image.open(tmp_path / "yale" / "subject02.happy") as image:  # sorted: glasses, happy
        expected = np.asarray(image.convert("L").resize((20, 15), Image.BILINEAR)) / 255
    np.testing.assert_allclose(faces.images[5, ..., 0], expected, atol=1e-6)


def test_lfw_layout_colour_keeps_the_aspect_ratio(tmp_path):
    write_tree(tmp_path, {"Ann_Lee": 2, "Bob_Ray": 3, "Cy_Oz": 1}, size=(30, 20),
               suffix=".png", mode="RGB")
    faces = data.load_folder(str(tmp_path), (8, 8), color=True, min_images=2)
    assert faces.names == ["Ann_Lee", "Bob_Ray"]  # Cy_Oz has 1 image: dropped on request
    assert faces.images.shape == (5, 8, 8, 3)
    # A square input from 30x20 images: the centre 20x20 (never a squash), then resized.
    with Image.open(tmp_path / "Ann_Lee" / "Ann_Lee_0001.png") as image:
        expected = np.asarray(image.crop((5, 0, 25, 20)).resize((8, 8), Image.BILINEAR)) / 255
    np.testing.assert_allclose(faces.images[0], expected, atol=1e-6)


def test_default_size_is_the_datas_own_when_small():
    assert data.input_size((92, 112), None) == (92, 112)
    assert data.input_size((320, 243), None) == (64, 49)
    assert data.input_size((320, 243), (40, 30)) == (40, 30)


def test_olivetti_loader_reads_scikit_learn_cache(tmp_path):
    import joblib

    raw = np.random.default_rng(1).integers(0, 256, (400, 4096)).astype(np.uint8)
    joblib.dump(raw, tmp_path / "olivetti_py3.pkz", compress=6)
    faces = data.load_scikit_learn("olivetti", str(tmp_path), None)
    np.testing.assert_array_equal(faces.labels, np.arange(400) // 10)
    assert faces.names[0] == "s1" and faces.images.shape == (400, 64, 64, 1)
    scaled = (raw - raw.min()) / (raw.max() - raw.min())  # scikit-learn's own scaling
    np.testing.assert_allclose(faces.images[7, ..., 0], scaled[7].reshape(64, 64).T,
                               atol=0.5 / 255 + 1e-6)


def test_synthetic_is_deterministic_at_any_aspect():
    images, labels = synthetic.render(5, 3, (40, 30), seed=3)
    assert images.shape == (15, 30, 40) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, synthetic.render(5, 3, (40, 30), seed=3)[0])
    assert not np.array_equal(images, synthetic.render(5, 3, (40, 30), seed=4)[0])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(5), 3))


# ---------------------------------------------------------------- batches, augmentation


def test_stream_is_class_balanced_and_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(10), [3, 4, 5, 3, 6, 3, 4, 3, 5, 3]).astype(np.int32)
    images = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1)
    stream = data.stream(images, labels, 4, 3, seed=5, steps_per_epoch=2, augmented=False)
    dataset, steps = stream(0)
    assert steps == 2
    batches = [(x.numpy().ravel().astype(int), y.numpy()) for x, y in dataset.take(6)]
    for index, batch_labels in batches:
        np.testing.assert_array_equal(labels[index], batch_labels)
        groups = batch_labels.reshape(4, 3)
        assert (groups == groups[:, :1]).all()  # K contiguous images of one person
        assert len(np.unique(groups[:, 0])) == 4  # P distinct people
        assert all(len(set(row)) == 3 for row in index.reshape(4, 3))  # distinct images
    for first_epoch in (1, 2):  # epoch e starts at step 2e, whatever came before
        resumed = [x.numpy().ravel() for x, _ in stream(first_epoch)[0].take(2)]
        for offset, index in enumerate(resumed):
            np.testing.assert_array_equal(index, batches[2 * first_epoch + offset][0])
    other = next(iter(data.stream(images, labels, 4, 3, 6, 2, False)(0)[0]))
    assert not np.array_equal(other[0].numpy().ravel(), batches[0][0])


def test_augmentation_flip_crop_and_lighting_against_numpy(monkeypatch):
    import tensorflow as tf

    images = np.random.default_rng(0).random((6, 8, 10, 1)).astype(np.float32)
    key = tf.constant([1, 2], tf.int64)
    neutral = {"crop": 0.0, "flip": 1.0, "brightness": 0.0, "contrast": 0.0, "lighting": 0.0}
    monkeypatch.setattr(augment, "AUGMENT", neutral)
    np.testing.assert_allclose(augment.faces(tf.constant(images), key).numpy(),
                               images[:, :, ::-1], atol=1e-6)  # every image mirrored
    monkeypatch.setattr(augment, "AUGMENT", {**neutral, "flip": 0.0, "crop": 0.5})
    cropped = augment.faces(tf.constant(images), key).numpy()
    assert cropped.shape == images.shape and not np.allclose(cropped, images)
    assert cropped.min() >= images.min() - 1e-6 and cropped.max() <= images.max() + 1e-6
    monkeypatch.setattr(augment, "AUGMENT", {**neutral, "flip": 0.0, "lighting": 0.5})
    lit = augment.faces(tf.constant(np.full((50, 4, 9, 1), 0.5, np.float32)), key).numpy()
    ratio = lit[:, 0, :, 0] / 0.5 - 1.0  # a linear ramp across the width, through 1
    np.testing.assert_allclose(ratio[:, 4], 0.0, atol=1e-6)
    np.testing.assert_allclose(ratio[:, 0], -ratio[:, 8], atol=1e-6)
    assert np.abs(ratio).max() <= 0.5 + 1e-6 and np.abs(ratio).max() > 0.3


# ---------------------------------------------------------------- protocols, baselines


def test_splits_of_each_protocol():
    images = np.zeros((30, 4, 4, 1), np.float32)
    faces = data.Faces(images, np.repeat(np.arange(6), 5), [f"p{i}" for i in range(6)],
                       [f"/d/p{i}" for i in range(6)], images, "x")
    (fold,) = protocols.make(faces, "per_identity:2", 0)
    np.testing.assert_array_equal(fold["train"][:4], [0, 1, 5, 6])
    folds = protocols.make(faces, "kfold:3", 0)
    tested = np.sort(np.concatenate([f["test"] for f in folds]))
    np.testing.assert_array_equal(tested, np.arange(30))  # every image tested once
    for f in folds:
        assert not set(f["train"]) & set(f["test"])
    (unseen,) = protocols.make(faces, "unseen_identities", 0)
    people = [set(faces.labels[unseen[s]]) for s in ("train", "val", "test")]
    assert all(not a & b for a in people for b in people if a is not b)
    with pytest.raises(ValueError, match="/d/p0: 5 image"):
        protocols.make(faces, "per_identity:5", 0)
    with pytest.raises(ValueError, match="4 people, too few for --protocol=unseen"):
        protocols.make(data.subset(faces, faces.labels < 4), "unseen_identities", 0)


def test_positions_against_counting_the_earlier_images():
    labels = np.random.default_rng(4).integers(0, 7, 200)  # interleaved people
    expected = [np.sum(labels[:i] == label) for i, label in enumerate(labels)]
    np.testing.assert_array_equal(data.positions(labels), expected)


def _faces(people: int, per_person, native_size: tuple[int, int], places=None, name="x"):
    """Faces of `people` with `per_person` images each (an int or a list), blank images
    at `native_size` (width, height): what `data.collection` looks at."""
    counts = np.broadcast_to(per_person, people)
    labels = np.repeat(np.arange(people), counts).astype(np.int32)
    native = np.zeros((len(labels), native_size[1], native_size[0], 1), np.float32)
    places = places or [f"/d/s{i + 1}" for i in range(people)]
    return data.Faces(native[:, :8, :8], labels, [f"s{i + 1}" for i in range(people)],
                      places, native, name)


def test_references_and_source_follow_from_the_data_and_protocol():
    """Whatever the preset is called: the Yale and AT&T numbers come with data of their
    shape under per_identity:5, and nothing comes with an unknown folder."""
    yale = _faces(15, [10] + [11] * 14, (320, 243), [f"/y/subject{i:02d}.*" for i in range(15)])
    att = _faces(40, 10, (92, 112))
    assert data.collection(yale) == "yale" and data.collection(att) == "att_faces"
    assert data.collection(_faces(40, 10, (92, 110))) is None  # another size
    assert data.collection(_faces(15, 11, (320, 243))) is None  # folders, not Yale's files
    assert report.references("yale", "per_identity:5") == report.REFERENCES["yale"]
    assert report.references("att_faces", "per_identity:5") == report.REFERENCES["att_faces"]
    assert report.references("olivetti", "per_identity:5") == report.REFERENCES["att_faces"]
    assert report.references("yale", "kfold:5") == []  # the numbers are per_identity:5's
    assert report.references(None, "per_identity:5") == []
    assert report.references("synthetic", "unseen_identities") == \
        report.REFERENCES["unseen_identities"]
    assert report.source("yale", "folder:/y").startswith("The Yale Face Database")
    assert report.source(None, "folder:/z") == "--dataset=folder:/z"


def test_classic_baselines_against_scikit_learn():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 6)
    images = (rng.normal(size=(5, 6, 6, 1))[labels] + rng.normal(size=(30, 6, 6, 1)))
    folds = [{"train": np.flatnonzero(np.arange(30) % 6 < 3),
              "test": np.flatnonzero(np.arange(30) % 6 >= 3)}]
    found, _ = evaluate.classic({"": images}, labels, folds, 0)
    flat = images.reshape(30, -1)
    train, test = folds[0]["train"], folds[0]["test"]
    pca = PCA(14).fit(flat[train])  # eigenfaces: at most N - 1 components
    knn = KNeighborsClassifier(1).fit(pca.transform(flat[train]), labels[train])
    expected = 1 - knn.score(pca.transform(flat[test]), labels[test])
    assert found["pca"]["identification_error"].value == pytest.approx(expected)
    mean, directions = published_fisherfaces(flat[train], labels[train], "svd")
    knn = KNeighborsClassifier(1).fit((flat[train] - mean) @ directions, labels[train])
    expected = 1 - knn.score((flat[test] - mean) @ directions, labels[test])
    assert found["fisherfaces"]["identification_error"].value == pytest.approx(expected)


def published_fisherfaces(train: np.ndarray, labels: np.ndarray, solver: str):
    """scikit-learn's PCA to N - c components, then its LDA's c - 1 discriminant
    directions, mapped back to pixels and scaled to unit length as a projection, W_opt of
    Belhumeur et al. (LDA's own transform whitens them). (mean [P], W_opt [P, c - 1])."""
    classes = len(np.unique(labels))
    pca = PCA(len(train) - classes).fit(train)
    lda = LinearDiscriminantAnalysis(solver=solver).fit(pca.transform(train), labels)
    directions = pca.components_.T @ lda.scalings_[:, :classes - 1]
    return pca.mean_, directions / np.linalg.norm(directions, axis=0)


@pytest.mark.parametrize("solver", ["eigen", "svd"])
def test_fisherfaces_against_scikit_learn_lda(solver):
    """On synthetic faces (8 people, first 3 of 6 images train): the same c - 1 dimensional
    subspace as PCA(N - c) + scikit-learn's LDA (its test points an invertible linear map
    of ours), and the same projection once its directions have unit length, so the same
    nearest neighbours."""
    pixels, labels = synthetic.render(8, 6, (16, 16), seed=5)
    flat = pixels.reshape(len(labels), -1).astype(np.float64)
    train, test = data.positions(labels) < 3, data.positions(labels) >= 3
    mean, directions = evaluate.fisherfaces(flat[train], labels[train])
    assert directions.shape == (256, 7)
    ours = (flat[test] - mean) @ directions

    pca = PCA(24 - 8).fit(flat[train])
    lda = LinearDiscriminantAnalysis(solver=solver).fit(pca.transform(flat[train]),
                                                        labels[train])
    theirs = lda.transform(pca.transform(flat[test]))
    assert theirs.shape == ours.shape
    design = np.column_stack([theirs, np.ones(len(theirs))])
    mapping, residual, rank, _ = np.linalg.lstsq(design, ours, rcond=None)
    assert rank == 8 and np.abs(design @ mapping - ours).max() < 1e-6 * np.abs(ours).max()
    assert np.linalg.matrix_rank(mapping[:-1]) == 7  # invertible: the same subspace

    their_mean, unit = published_fisherfaces(flat[train], labels[train], solver)
    projected = (flat[test] - their_mean) @ unit
    np.testing.assert_allclose(np.abs(ours), np.abs(projected), atol=1e-6)  # up to sign
    found = evaluate.nearest((flat[train] - mean) @ directions, ours)
    expected = evaluate.nearest((flat[train] - their_mean) @ unit, projected)
    np.testing.assert_array_equal(found, expected)


def test_verification_metrics_against_brute_force():
    rng = np.random.default_rng(2)
    val_labels, test_labels = np.repeat(np.arange(6), 4), np.repeat(np.arange(6, 14), 3)
    centres = rng.normal(size=(14, 5))
    val = centres[val_labels] + 0.8 * rng.normal(size=(24, 5))
    test = centres[test_labels] + 0.8 * rng.normal(size=(24, 5))
    metrics, details = evaluate.verification((val, val_labels), (test, test_labels), 0)
    same, first, second = details["same"], details["first"], details["second"]
    assert same.sum() == len(same) // 2 == 8 * 3  # all C(3, 2) pairs of each of 8 people
    vf, vs, vsame = evaluate.balanced_pairs(val_labels, 0)
    val_d = np.array([np.linalg.norm(val[a] - val[b]) for a, b in zip(vf, vs)])
    best = max(np.mean((val_d < t) == vsame) for t in np.concatenate([val_d, val_d + 1e-9]))
    threshold = metrics["verification_threshold"]
    assert np.mean((val_d < threshold) == vsame) == pytest.approx(best)
    d = np.array([np.linalg.norm(test[a] - test[b]) for a, b in zip(first, second)])
    assert metrics["verification_accuracy"].value == pytest.approx(np.mean((d < threshold)
                                                                           == same))
    auc = np.mean([(p < n) + 0.5 * (p == n) for p in d[same] for n in d[~same]])
    assert metrics["roc_auc"] == pytest.approx(auc)
    hits = [test_labels[min((j for j in range(24) if j != i),
                            key=lambda j: np.linalg.norm(test[i] - test[j]))] == test_labels[i]
            for i in range(24)]
    assert metrics["recall_at_1"].value == pytest.approx(np.mean(hits))


def test_person_interval_matches_the_binomial_over_people():
    """One person's images move together: the interval is that of a proportion over the
    100 people (+- 1.96 sqrt(p (1 - p) / 100)), not over the 300 images."""
    labels = np.repeat(np.arange(100), 3)
    interval = evaluate.by_person(labels < 30, labels, seed=0)
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / 100)
    assert interval.value == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.3 - half_width, abs=0.02)
    assert interval.high == pytest.approx(0.3 + half_width, abs=0.02)


# ---------------------------------------------------------------- bad input


def write_armed_hdf5(run_dir: Path, marker: Path) -> None:
    """RUN_DIR/model.keras in the legacy HDF5 format, holding a Lambda layer whose
    bytecode creates `marker` when it runs (the legacy loader runs it while rebuilding)."""
    import tensorflow as tf

    path = str(marker)  # a closure cell (a str, so JSON): saved beside the bytecode

    def touch(x):
        open(path, "w").close()
        return x

    armed = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Lambda(touch)])
    run_dir.mkdir()
    armed.save(run_dir / "model.h5", save_format="h5")
    (run_dir / "model.h5").rename(run_dir / "model.keras")


def test_bad_inputs_fail_clearly_before_anything_is_written(bad_inputs, tmp_path, repository):
    """Each bad flag, file or folder stops with a one-line error naming it, before
    anything is written or published; the HDF5 model.keras of --init_from is refused
    without running its code."""
    import tensorflow as tf

    marker, armed = tmp_path / "code_ran", tmp_path / "armed_run"
    write_armed_hdf5(armed, marker)
    # The file is armed (else the case below could not fail): Keras' own loader runs it.
    marker.unlink(missing_ok=True)  # building the model called the lambda once
    tf.keras.models.load_model(armed / "model.keras", compile=False)
    assert marker.exists()
    marker.unlink()
    empty = tmp_path / "empty"
    (empty / "s1").mkdir(parents=True)
    (empty / "s1" / ".hidden").write_text("")
    few = tmp_path / "few"
    write_tree(few, {"s1": 6, "s2": 6, "s3": 3})
    broken = tmp_path / "broken"
    write_tree(broken, {"s1": 6, "s2": 6})
    (broken / "s2" / "7.pgm").write_bytes(b"not an image")
    att = FOLDER / "configs" / "att_faces.cfg"
    cases = {  # name: (arguments, exit status, what the message names)
        "folder_empty": ([f"--dataset=folder:{empty}"], 2, "no face images found"),
        "folder_missing": ([f"--dataset=folder:{tmp_path / 'missing'}"], 2,
                           str(tmp_path / "missing")),
        "person_too_few": ([f"--dataset=folder:{few}", "--protocol=per_identity:5"], 2,
                           f"{few / 's3'}: 3 image"),
        "image_unreadable": ([f"--dataset=folder:{broken}"], 2,
                             f"cannot read image {broken / 's2' / '7.pgm'}"),
        "preset_without_data": ([f"--flagfile={att}"], 2, "--dataset=folder:PATH"),
        "init_from_no_model": ([f"--dataset=folder:{few}", f"--init_from={tmp_path}"], 2,
                               "model.keras"),
        "init_from_hdf5": ([f"--init_from={armed}"], 2, "--init_from"),
        "protocol_word": (["--protocol=per_identity:x"], 1, "--protocol must be"),
        "protocol_leave_one_out": (["--protocol=leave_one_out"], 1, "leave-one-out is scored"),
        "protocol_kfold_one": (["--protocol=kfold:1"], 1, "--protocol must be"),
        "image_size_one_side": (["--image_size=32"], 1, "WIDTHxHEIGHT"),
        "image_size_zero": (["--image_size=0x0"], 1, "--image_size"),
        "image_size_absurd": (["--image_size=100000x32"], 1, "--image_size"),
        "dataset_unknown": (["--dataset=imagenet"], 1, "--dataset must be"),
        "dataset_folder_no_path": (["--dataset=folder:"], 1, "--dataset must be"),
        "weight_decay_negative": (["--weight_decay=-1"], 1, "--weight_decay"),
        "weight_decay_inf": (["--weight_decay=inf"], 1, "--weight_decay"),
        "weight_decay_huge": (["--weight_decay=1e30"], 1, "--weight_decay"),
        "dropout_above_one": (["--dropout=1.5"], 1, "--dropout"),
        "dropout_negative": (["--dropout=-0.5"], 1, "--dropout"),
        "dropout_one": (["--dropout=1"], 1, "--dropout"),
        "margin_nan": (["--margin=nan"], 1, "--margin"),
        "margin_zero": (["--margin=0"], 1, "--margin"),
        "margin_huge": (["--margin=1e30"], 1, "--margin"),
        "mining_unknown": (["--mining=hardest"], 1, "--mining"),
        "embedding_dim_zero": (["--embedding_dim=0"], 1, "--embedding_dim"),
        "width_huge": (["--width=100000"], 1, "--width"),
        "steps_per_epoch_zero": (["--steps_per_epoch=0"], 1, "--steps_per_epoch"),
        "images_per_identity_one": (["--images_per_identity=1"], 1, "--images_per_identity"),
        "batch_not_p_times_k": (["--global_batch_size=30"], 2, "--images_per_identity=4"),
        "min_images_zero": (["--min_images_per_identity=0"], 1, "--min_images_per_identity"),
        "first_images_one": (["--first_images_per_identity=1"], 1,
                             "--first_images_per_identity"),
    }
    before = sorted((repository / "results" / RECIPE).glob("*"))
    # --smoke: a case that got through would run in seconds, not train for minutes.
    outcomes = bad_inputs(RECIPE, {name: ["--smoke", "--publish", *args]
                                   for name, (args, _, _) in cases.items()})
    for name, (_, status, expected) in cases.items():
        outcome = outcomes[name]
        assert outcome["status"] == status, (name, outcome["stderr"][-1500:])
        assert expected in outcome["stderr"], (name, outcome["stderr"][-1500:])
        assert len(outcome["stderr"].strip().splitlines()) == 1, (name, outcome["stderr"])
        assert outcome["written"] == [], (name, outcome["written"])
    assert not marker.exists()
    assert sorted((repository / "results" / RECIPE).glob("*")) == before


def test_the_command_line_refuses_a_bad_flag_with_exit_status_1(run_recipe):
    """The real process: absl's one line and exit status 1, before TensorFlow starts."""
    run = run_recipe(RECIPE, "--protocol=leave_one_out")
    assert run.returncode == 1, run
    assert "--protocol must be" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert run.record is None and not run.model_dir.exists()


def test_configs_state_their_command():
    for config in (FOLDER / "configs").glob("*.cfg"):
        first = config.read_text().splitlines()[0]
        assert first.startswith(f"# .venv/bin/python recipes/{RECIPE}/train.py "
                                f"--flagfile=recipes/{RECIPE}/configs/{config.name}"), config
