"""Nothing lost, nothing let in: what --overwrite may delete, symbolic links in a run
directory, corrupted run files, the default directory, SIGTERM and a full disk, and
loading a model file from outside the run."""

import errno
import json
import os
import signal
import subprocess
import sys
import zipfile

from common import cli, models, results, rundir, training
from common.config import Shared

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "published")
    yield
    rundir.release_locks()


def _start(model_dir, *flags, recipe="toy") -> training.Run:
    argv = [f"--model_dir={model_dir}", "--strategy=cpu", "--epochs=2",
            "--global_batch_size=4", "--backup_seconds=0", *flags]
    return training.start(recipe, cli.parse(Shared, argv))


def _model(run):
    with run.strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(2), tf.keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    return model


def _examples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1]))


def _finished(model_dir, recipe="toy"):
    run = _start(model_dir, recipe=recipe)
    training.fit(run, _model(run), _examples(), epochs=2)
    training.finish(run, metrics={"rmse": 1.0}, dataset={"name": "toy"})
    rundir.release_locks()
    return run


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- what --overwrite may delete -----------------------------------------------------

def test_overwrite_refuses_a_directory_that_is_not_a_run_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not a run directory") as refused:
        _start(mine, "--overwrite")
    assert "--overwrite" in str(refused.value) and "use --overwrite" not in str(refused.value)
    assert (mine / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("where", [".", ".."])
def test_overwrite_refuses_the_working_directory_and_its_parents(tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    _finished(work)  # even a run directory: never the directory the user stands in
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="working directory"):
        _start(where, "--overwrite")
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_symlink_and_keeps_its_target(tmp_path):
    target = tmp_path / "target"
    _finished(target)
    link = tmp_path / "link"
    link.symlink_to(target)
    before = _tree(target)
    with pytest.raises(ValueError, match="symbolic link"):
        _start(link, "--overwrite")
    assert _tree(target) == before


def test_overwrite_refuses_another_recipes_run_directory(tmp_path):
    _finished(tmp_path / "run", recipe="ranking")
    with pytest.raises(ValueError, match="'ranking', not of 'toy'"):
        _start(tmp_path / "run", "--overwrite")
    assert (tmp_path / "run" / "results.json").exists()


def test_overwrite_deletes_only_at_the_first_write_after_inputs_are_checked(tmp_path):
    _finished(tmp_path / "run")
    run = _start(tmp_path / "run", "--overwrite")
    # A data error here (between start and the first write) would leave the old run.
    assert (tmp_path / "run" / "results.json").exists()
    run.path("x")
    assert not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "run.json").exists()


def test_overwrite_trains_again_rather_than_load_the_old_weights(tmp_path):
    _finished(tmp_path / "run")
    run = _start(tmp_path / "run", "--overwrite")
    assert training.fit(run, _model(run), _examples(), epochs=2) is not None  # trained
    assert len(training.history(run)) == 2


# --- symbolic links and corrupted files in a run directory ---------------------------

def test_a_symlink_planted_in_a_run_directory_is_refused_on_resume(tmp_path):
    run = _start(tmp_path / "run", "--simulate_crash_at_step=5")
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(run, _model(run), _examples(), epochs=2)
    rundir.release_locks()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / "run" / "metrics.jsonl").unlink()
    (tmp_path / "run" / "metrics.jsonl").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        _start(tmp_path / "run")
    assert outside.read_text() == "keep"


def test_run_path_refuses_a_symlink(tmp_path):
    run = _start(tmp_path / "run")
    run.path("x")
    (tmp_path / "run" / "tensorboard").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="symbolic link"):
        run.path("tensorboard")


@pytest.mark.parametrize("content", ["", '{"recipe": "toy", "configura', '{"recipe": "toy"}'])
def test_an_unreadable_run_json_names_the_file_and_overwrite_clears_it(tmp_path, content):
    _finished(tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text(content)
    with pytest.raises(ValueError, match=r"run\.json is unreadable.*--overwrite"):
        _start(tmp_path / "run")
    _start(tmp_path / "run", "--overwrite").path("x")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["recipe"] == "toy"


def test_a_log_line_cut_by_a_kill_is_dropped_and_a_corrupted_one_named(tmp_path):
    run = _start(tmp_path / "run")
    training.fit(run, _model(run), _examples(), epochs=2, name="a")
    log = tmp_path / "run" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][:10])  # the second line's write was cut
    rundir.release_locks()
    resumed = _start(tmp_path / "run")
    resumed.path("x")
    assert [line["epoch"] for line in training.history(resumed)] == [1]
    log.write_text("garbage\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 1"):
        training.history(resumed)


def test_an_unreadable_backup_or_trained_network_names_the_file(tmp_path):
    run = _start(tmp_path / "run", "--simulate_crash_at_step=5")
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(run, _model(run), _examples(), epochs=2)
    rundir.release_locks()
    for data in (tmp_path / "run" / "backup").rglob("*.data-*"):
        data.write_bytes(data.read_bytes()[:7])
    run = _start(tmp_path / "run")
    with pytest.raises(ValueError, match=r"backup.*unreadable.*--overwrite"):
        training.fit(run, _model(run), _examples(), epochs=2)
    rundir.release_locks()

    run = _start(tmp_path / "other")
    training.fit(run, _model(run), _examples(), epochs=2, name="net")
    for data in (tmp_path / "other" / "networks").rglob("*.data-*"):
        data.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"trained weights .*unreadable"):
        training.fit(run, _model(run), _examples(), epochs=2, name="net")


def test_default_directories_of_runs_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = rundir.default_directory("toy", "default")
    first.mkdir(parents=True)
    assert rundir.default_directory("toy", "default") != first
    other = subprocess.run([sys.executable, "-c", "from common import rundir; print("
                            "rundir.default_directory('toy', 'default'))"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert other.stdout.strip() != str(first)


# --- SIGTERM, a full disk, a non-finite loss ----------------------------------------

def test_sigterm_ends_with_one_line_143_and_no_lock(tmp_path, capsys):
    def train(config):
        run = training.start("toy", config)
        run.path("x")
        os.kill(os.getpid(), signal.SIGTERM)

    config = Shared(model_dir=str(tmp_path / "run"), strategy="cpu")
    assert cli.run(train, config) == 143
    assert "terminated (SIGTERM); rerun the same command" in capsys.readouterr().err
    assert not (tmp_path / "run" / "lock").exists()


@pytest.mark.parametrize("sent, status, line", [
    (signal.SIGTERM, 143, "terminated (SIGTERM); rerun the same command to resume"),
    (signal.SIGINT, 130, "interrupted; rerun the same command to resume"),
])
def test_a_signal_re_raised_as_another_error_still_ends_as_the_signal(tmp_path, capsys, sent,
                                                                     status, line):
    """TensorFlow re-raises an exception raised inside it (a tf.data generator, a
    callback) as its own error: the run still ends as the signal says, in one line."""
    def train(config):
        training.start("toy", config).path("x")
        try:
            os.kill(os.getpid(), sent)
        except BaseException as error:
            raise tf.errors.UnknownError(None, None, "wrapped") from error

    config = Shared(model_dir=str(tmp_path / "run"), strategy="cpu")
    assert cli.run(train, config) == status
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not (tmp_path / "run" / "lock").exists()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    tf.errors.ResourceExhaustedError(None, None, "model.keras; No space left on device"),
    tf.errors.UnknownError(None, None, "Failed to write: No space left on device"),
])
def test_a_full_disk_is_one_line_that_says_to_free_space_and_resume(capsys, error):
    def train(config):
        raise error

    assert cli.run(train, Shared()) == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "free some space and rerun the same command" in message[0]


def test_a_non_finite_loss_says_what_to_check(tmp_path):
    run = _start(tmp_path / "run")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    nan = tf.data.Dataset.from_tensor_slices((x, np.full((16, 1), np.nan, np.float32)))
    with pytest.raises(FloatingPointError, match="learning rate.*resumed or overwritten"):
        training.fit(run, _model(run), nan, epochs=2)


@pytest.mark.parametrize("flag", ["--learning_rate=inf", "--learning_rate=1e30",
                                  "--learning_rate=nan", "--backup_seconds=inf"])
def test_shared_numeric_flags_are_finite_and_in_range(flag):
    name = flag[2:].split("=")[0]
    with pytest.raises(cli.FlagError, match=f"--{name}"):
        cli.parse(Shared, [flag])


# --- loading a model file from outside the run ---------------------------------------

def _lambda_model(marker):
    """A model whose Lambda layer creates `marker` when its code runs."""
    def touch(x, path=str(marker)):
        open(path, "w").close()
        return x

    return tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Lambda(touch)])


def test_load_model_refuses_an_hdf5_file_named_keras_and_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    model = _lambda_model(marker)
    marker.unlink()  # building ran it once
    model.save(tmp_path / "model.h5", save_format="h5")
    (tmp_path / "model.h5").rename(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="--init_from.*not a zip-format .keras file"):
        models.load_model(tmp_path / "model.keras", flag="--init_from")
    assert not marker.exists()
    # The legacy loader itself would have run the code: the refusal is what stops it.
    tf.keras.models.load_model(tmp_path / "model.keras", safe_mode=False)
    assert marker.exists()


def test_load_model_refuses_lambda_code_in_a_keras_zip(tmp_path):
    marker = tmp_path / "ran"
    _lambda_model(marker).save(tmp_path / "model.keras")
    marker.unlink()
    assert zipfile.is_zipfile(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        models.load_model(tmp_path / "model.keras")
    assert not marker.exists()


def test_load_model_loads_a_plain_model(tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    model.save(tmp_path / "model.keras")
    loaded = models.load_model(tmp_path / "model.keras")
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(loaded(x), model(x))


def test_load_model_under_keras_3_names_import_common(monkeypatch):
    class Keras3:
        __name__ = "keras._tf_keras.keras"

    monkeypatch.setattr(models.tf, "keras", Keras3())
    with pytest.raises(RuntimeError, match="import common.*TF_USE_LEGACY_KERAS=1"):
        models.load_model("model.keras")
