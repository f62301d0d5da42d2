"""The shared run: the training stream, fit + finish and the run directory, resuming."""

import json
import os
import socket
import subprocess
import sys

from common import callbacks, cli, intervals, metrics, results, training
from common.config import Shared

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Published records go to tmp_path/published; flags are unparsed afterwards."""
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "published")
    monkeypatch.setattr(results, "git_commit", lambda: "0" * 40)  # a clean tree
    yield


def _start(model_dir, *flags) -> training.Run:
    """A run of the recipe "toy" as `train.py --model_dir=... --strategy=cpu *flags`."""
    argv = [f"--model_dir={model_dir}", "--strategy=cpu", *flags]
    return training.start("toy", cli.parse(Shared, argv))


def _stream(examples, run, first_epoch=0):
    return training.training_stream(examples, global_batch_size=run.global_batch_size,
                                    seed=run.seed, first_epoch=first_epoch)


def _epochs(stream, steps: int, count: int) -> list[np.ndarray]:
    """The first `count` epochs of a stream, each as one array of example ids."""
    batches = list(stream.take(steps * count).as_numpy_iterator())
    assert len({len(batch) for batch in batches}) == 1
    return [np.concatenate(batches[e * steps:(e + 1) * steps]) for e in range(count)]


# --- the training stream -------------------------------------------------------------

@pytest.mark.parametrize("size, batch", [(23, 5), (24, 6), (7, 7)])
def test_each_epoch_is_a_permutation_minus_the_remainder(tmp_path, size, batch):
    run = _start(tmp_path / "run", f"--global_batch_size={batch}")
    stream, steps = _stream(tf.data.Dataset.range(size), run)
    assert steps == size // batch
    epochs = _epochs(stream, steps, 3)
    for epoch in epochs:
        assert len(epoch) == steps * batch
        assert len(np.unique(epoch)) == len(epoch)  # no example twice in an epoch
        assert np.isin(epoch, np.arange(size)).all()
    if size > batch:
        assert not np.array_equal(epochs[0], np.arange(steps * batch))  # shuffled
        assert not np.array_equal(epochs[0], epochs[1])  # and reshuffled each epoch


def test_same_seed_same_stream_other_seed_other_stream(tmp_path):
    examples = tf.data.Dataset.range(30)
    streams = {}
    for label, seed in (("first", 7), ("again", 7), ("other", 8)):
        run = _start(tmp_path / label, "--global_batch_size=4", f"--seed={seed}")
        stream, steps = _stream(examples, run)
        streams[label] = np.stack(_epochs(stream, steps, 2))
    np.testing.assert_array_equal(streams["first"], streams["again"])
    assert not np.array_equal(streams["first"], streams["other"])


def test_stream_rejects_too_large_batch_and_unknown_size(tmp_path):
    run = _start(tmp_path / "run", "--global_batch_size=24")
    with pytest.raises(ValueError, match="global_batch_size=24"):
        _stream(tf.data.Dataset.range(23), run)
    with pytest.raises(ValueError):
        _stream(tf.data.Dataset.range(50).repeat(), run)
    with pytest.raises(ValueError):
        _stream(tf.data.Dataset.range(50).filter(lambda i: i > 3), run)


def test_start_with_mirrored_needs_a_batch_that_splits_over_replicas(tmp_path, mirrored_strategy):
    mirrored = ("--strategy=mirrored", "--num_cpu_devices=2")
    with pytest.raises(ValueError, match="global_batch_size=5"):
        _start(tmp_path / "odd", *mirrored, "--global_batch_size=5")
    run = _start(tmp_path / "even", *mirrored, "--global_batch_size=4")
    assert run.strategy is mirrored_strategy
    assert run.num_replicas == 2


# --- fit and finish ------------------------------------------------------------------

def _regression(size: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1 * rng.normal(size=(size, 1))
    return x, y.astype(np.float32)


def _model(run: training.Run) -> tf.keras.Model:
    with run.strategy.scope():
        model = tf.keras.Sequential(
            [tf.keras.layers.Dense(4, activation="tanh"), tf.keras.layers.Dense(1)]
        )  # not built: fit builds it before BackupAndRestore needs its variables
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse")
    return model


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fit_and_finish_write_the_run_directory_and_not_results(tmp_path):
    model_dir = tmp_path / "run"
    run = _start(model_dir, "--epochs=2", "--global_batch_size=8")
    x, y = _regression(43)  # 5 steps of 8; 3 examples dropped each epoch
    model = _model(run)
    history = training.fit(run, model, tf.data.Dataset.from_tensor_slices((x, y)), epochs=2)
    rmse = metrics.rmse(y, model.predict(x, verbose=0))
    record = training.finish(
        run, metrics={"rmse": rmse}, tolerances={"rmse": 0.05}, model=model,
        dataset={"name": "toy", "fingerprint": results.fingerprint(x, y)},
    )

    recorded_flags = json.loads((model_dir / "flags.json").read_text())["flags"]
    assert (recorded_flags["epochs"], recorded_flags["global_batch_size"]) == (2, 8)
    assert recorded_flags["model_dir"] == str(model_dir)

    lines = _jsonl(model_dir / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [1, 2]
    assert [line["loss"] for line in lines] == pytest.approx(history.history["loss"], rel=1e-6)

    saved = json.loads((model_dir / "results.json").read_text())
    assert saved["metrics"] == {"rmse": pytest.approx(rmse, rel=1e-12)}
    assert saved["tolerances"] == {"rmse": 0.05}
    assert (saved["recipe"], saved["config"], saved["seed"]) == ("toy", "default", 42)
    assert saved["strategy"] == {"name": "cpu", "replicas": 1}
    assert saved["versions"]["tensorflow"] == tf.__version__
    assert saved["dataset"]["fingerprint"] == results.fingerprint(x, y)
    assert [entry["epoch"] for entry in saved["history"]] == [1, 2]
    timing_info = saved["timing"]
    assert timing_info["steps_timed"] == 2 * 5 - 1  # every step but the first (tracing)
    assert timing_info["examples_per_second"] == pytest.approx(
        8 / timing_info["median_step_seconds"]
    )
    assert timing_info["wall_seconds"] > 0
    assert saved["weights_fingerprint"] == results.fingerprint(*model.get_weights())
    assert record["weights_fingerprint"] == saved["weights_fingerprint"]
    assert not (tmp_path / "published").exists()  # no --publish, nothing under results/


def test_fit_raises_on_a_nan_loss_after_one_step(tmp_path):
    run = _start(tmp_path / "run", "--epochs=3", "--global_batch_size=8")
    x, y = _regression(40)
    y[:] = np.nan
    model = _model(run)
    with pytest.raises(FloatingPointError):
        training.fit(run, model, tf.data.Dataset.from_tensor_slices((x, y)), epochs=3)
    # TerminateOnNaN stopped after the first of 15 steps.
    assert run.timer.summary()["steps_timed"] == 0
    assert run.timer.summary()["first_step_seconds"] is not None


def test_metrics_jsonl_stays_json_with_a_nan_loss(tmp_path):
    run = _start(tmp_path / "run")
    callbacks.EpochLog("toy", run.path("metrics.jsonl"), 1, "").on_epoch_end(
        0, {"loss": np.float32("nan")}
    )

    def refuse(constant):
        raise ValueError(constant)

    for line in (run.model_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)


def test_publish_writes_record_and_artifacts_under_results(tmp_path):
    flagfile = tmp_path / "smoke.cfg"
    flagfile.write_text("--epochs=1\n")
    argv = [f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}", "--strategy=cpu",
            "--publish"]
    run = training.start("toy", cli.parse(Shared, argv))
    assert run.config == "smoke"
    assert run.command == "python train.py " + " ".join(argv)
    plot = run.path("ndcg.png")
    plot.write_bytes(b"\x89PNG not really")
    training.finish(run, metrics={"ndcg": 0.75}, dataset={"name": "toy"}, artifacts=[plot])

    published = tmp_path / "published" / "toy" / "smoke.json"
    assert results.published("toy") == [published]
    assert results.load(published) == results.load(run.model_dir / "results.json")
    assert results.load(published)["metrics"] == {"ndcg": 0.75}
    assert (published.parent / "smoke-ndcg.png").read_bytes() == b"\x89PNG not really"


def test_publish_refuses_a_tree_with_uncommitted_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "git_commit", lambda: "0" * 40 + "+dirty")
    run = _start(tmp_path / "run", "--publish")
    with pytest.raises(ValueError, match="--publish: the work tree has uncommitted changes"):
        run.path("x")  # the first write, before anything trains
    assert not run.model_dir.exists()
    assert not (tmp_path / "published").exists()


def test_publish_only_from_the_chief(tmp_path):
    run = _start(tmp_path / "run", "--publish")
    run.is_chief = False  # as on worker 1 of a cluster
    training.finish(run, metrics={"ndcg": 0.75}, dataset={"name": "toy"})
    assert results.load(run.model_dir / "results.json")["metrics"] == {"ndcg": 0.75}
    assert not (tmp_path / "published").exists()


@pytest.mark.parametrize("mixed, policy", [(False, "float32"), (True, "mixed_bfloat16")])
def test_start_sets_the_precision_policy(tmp_path, mixed, policy):
    assert not tf.config.list_physical_devices("GPU"), "this test expects a GPU-less machine"
    tf.keras.mixed_precision.set_global_policy("mixed_float16")  # whatever came before
    _start(tmp_path / "run", f"--mixed_precision={str(mixed).lower()}")
    assert tf.keras.mixed_precision.global_policy().name == policy


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan")])
def test_finish_refuses_a_non_finite_metric_and_writes_nothing(tmp_path, bad):
    run = _start(tmp_path / "run", "--publish")
    with pytest.raises(FloatingPointError, match="ndcg"):
        training.finish(run, metrics={"rmse": 0.5, "ndcg": bad}, dataset={"name": "toy"})
    assert not (run.model_dir / "results.json").exists()
    assert not (tmp_path / "published").exists()


def test_finish_with_no_metrics_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "published")
    run = _start(tmp_path / "run", "--publish")
    with pytest.raises(ValueError, match="no metrics"):
        training.finish(run, metrics={}, dataset={"name": "toy"})
    assert not (run.model_dir / "results.json").exists()
    assert not (tmp_path / "published").exists()


# --- resuming ------------------------------------------------------------------------

def test_run_killed_mid_epoch_and_restarted_ends_with_the_uninterrupted_weights(tmp_path):
    x, y = _regression(24)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    shared = ("--epochs=4", "--global_batch_size=4", "--backup_seconds=0")  # 6 steps/epoch

    def train(model_dir, *flags):
        run = _start(model_dir, *shared, *flags)
        model = _model(run)
        training.fit(run, model, examples, epochs=4)
        return run, model

    _, uninterrupted = train(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "b", "--simulate_crash_at_step=15")  # step 3 of epoch 3
    assert training.saved_epoch(_start(tmp_path / "b", *shared)) == 2
    resumed_run, resumed = train(tmp_path / "b")

    for expected, got in zip(uninterrupted.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    # The restart trained epochs 3 and 4 only (not 4 epochs from scratch) ...
    assert resumed_run.timer.summary()["steps_timed"] == 2 * 6 - 1
    a_log = _jsonl(tmp_path / "a" / "metrics.jsonl")
    b_log = _jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [line["epoch"] for line in b_log] == [1, 2, 3, 4]
    # ... and every epoch's loss matches the uninterrupted run's exactly.
    assert [line["loss"] for line in b_log] == [line["loss"] for line in a_log]


def test_backups_are_at_most_one_per_backup_seconds(tmp_path):
    x, y = _regression(24)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    # Epochs of milliseconds: with the default 30 s, none of the first three is backed
    # up and a crash in epoch 4 restarts from scratch; with 0, all three are.
    for every, saved in (("30", 0), ("0", 3)):
        flags = ("--epochs=5", "--global_batch_size=4", f"--backup_seconds={every}")
        run = _start(tmp_path / every, *flags, "--simulate_crash_at_step=21")
        with pytest.raises(RuntimeError, match="simulated crash"):
            training.fit(run, _model(run), examples, epochs=5)
        assert training.saved_epoch(_start(tmp_path / every, *flags)) == saved


# --- the run directory belongs to one configuration and one live run -----------------

def _finished_run(model_dir, *flags):
    run = _start(model_dir, "--epochs=1", "--global_batch_size=8", *flags)
    x, y = _regression(16)
    training.fit(run, _model(run), tf.data.Dataset.from_tensor_slices((x, y)), epochs=1)
    training.finish(run, metrics={"rmse": 1.0}, dataset={"name": "toy"})
    return run


def test_start_writes_nothing_until_the_first_write(tmp_path):
    run = _start(tmp_path / "run")
    assert not run.model_dir.exists()  # data errors after start leave no directory
    run.path("plot.png")
    assert (run.model_dir / "run.json").exists() and (run.model_dir / "flags.json").exists()


def test_another_configuration_is_refused_naming_the_flags(tmp_path):
    _finished_run(tmp_path / "run", "--learning_rate=0.01")
    with pytest.raises(ValueError, match=r"another configuration.*--learning_rate"):
        _start(tmp_path / "run", "--epochs=1", "--global_batch_size=8", "--learning_rate=0.02")
    # How a run executes is not its configuration: another strategy may resume it.
    with pytest.raises(training.AlreadyFinished):
        _start(tmp_path / "run", "--epochs=1", "--global_batch_size=8",
               "--learning_rate=0.01", "--publish")


def test_a_finished_run_is_not_redone_unless_overwritten(tmp_path):
    _finished_run(tmp_path / "run")
    with pytest.raises(training.AlreadyFinished, match="--overwrite"):
        _start(tmp_path / "run", "--epochs=1", "--global_batch_size=8")
    run = _start(tmp_path / "run", "--epochs=1", "--global_batch_size=8", "--overwrite")
    run.path("x")  # the first write (after the inputs were checked) clears the old run
    assert not (run.model_dir / "results.json").exists()


def test_a_live_run_locks_its_directory_and_a_dead_ones_lock_is_taken_over(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (model_dir / "lock").write_text(json.dumps({"pid": sleeper.pid,
                                                    "host": socket.gethostname()}))
        with pytest.raises(ValueError, match="in use by another run"):
            _start(model_dir)
    finally:
        sleeper.kill()
        sleeper.wait()
    run = _start(model_dir)  # the process is gone: its lock is stale
    run.path("x")
    assert json.loads((model_dir / "lock").read_text())["pid"] == os.getpid()
    training.rundir.release_locks()
    assert not (model_dir / "lock").exists()


def test_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match="not a run directory"):
        _start(tmp_path / "mine")


def test_finished_networks_are_loaded_not_retrained(tmp_path):
    x, y = _regression(24)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    run = _start(tmp_path / "run", "--global_batch_size=4")
    first = _model(run)
    assert training.fit(run, first, examples, epochs=2, name="a") is not None
    again = _model(run)
    assert training.fit(run, again, examples, epochs=2, name="a") is None
    for expected, got in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert [(line["model"], line["epoch"]) for line in training.history(run)] == [
        ("a", 1), ("a", 2)]


def test_history_keeps_each_epoch_once(tmp_path):
    run = _start(tmp_path / "run")
    log = callbacks.EpochLog("toy", run.path("metrics.jsonl"), 2, "b")
    for epoch, loss in ((0, 3.0), (1, 2.0), (1, 1.5)):  # epoch 2 logged again on resume
        log.on_epoch_end(epoch, {"loss": loss})
    assert [(line["epoch"], line["loss"]) for line in training.history(run)] == [
        (1, 3.0), (2, 1.5)]


def test_save_model_keeps_a_keras_file_and_a_saved_model(tmp_path):
    run = _start(tmp_path / "run", "--global_batch_size=4")
    x, y = _regression(12)
    model = _model(run)
    training.fit(run, model, tf.data.Dataset.from_tensor_slices((x, y)), epochs=1)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def serve(features):
        return {"prediction": model(features)}

    paths = training.save_model(run, model, serving=serve)
    expected = model.predict(x, verbose=0)
    loaded = tf.keras.models.load_model(run.model_dir / paths["keras"])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)
    exported = tf.saved_model.load(str(run.model_dir / paths["saved_model"]))
    served = exported.signatures["serving_default"](features=tf.constant(x))["prediction"]
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-6)
    record = training.finish(run, metrics={"rmse": 1.0}, dataset={"name": "toy"})
    assert record["models"] == {"model": {"keras": "model.keras",
                                          "saved_model": "saved_model"}}


def test_finish_writes_intervals_as_ci_keys(tmp_path):
    run = _start(tmp_path / "run")
    record = training.finish(
        run, metrics={"ndcg": intervals.Interval(0.5, 0.4, 0.6)},
        baselines={"random": {"ndcg": intervals.Interval(0.3, 0.2, 0.4)}},
        dataset={"name": "toy"})
    assert record["metrics"] == {"ndcg": 0.5, "ndcg_ci_low": 0.4, "ndcg_ci_high": 0.6}
    assert record["baselines"]["random"]["ndcg_ci_high"] == 0.4


# --- smoke settings and help ---------------------------------------------------------

def test_smoke_values_apply_unless_the_command_line_sets_them(tmp_path):
    class Smoky(Shared):
        SMOKE = {"epochs": 2, "global_batch_size": 8}

    flagfile = tmp_path / "big.cfg"
    flagfile.write_text("--epochs=30\n--global_batch_size=512\n")
    config = cli.parse(Smoky, [f"--flagfile={flagfile}", "--smoke", "--global_batch_size=16"])
    assert (config.epochs, config.global_batch_size) == (2, 16)
    assert config.flags["epochs"] == 2  # what flags.json and the record hold
    assert config.preset == "big"
    assert cli.parse(Smoky, ["--epochs=30"]).epochs == 30  # no --smoke: nothing changes


def test_help_text_lists_the_shared_flags():
    text = cli.help_text(Shared)
    for flag in ("--smoke", "--epochs", "--dataset", "--model_dir", "--strategy",
                 "--global_batch_size", "--publish", "--overwrite"):
        assert flag in text
