"""Runs a user can trust, end to end on the ranking recipe's real command line: a run
directory belongs to one configuration and one live run, finished work is not redone,
`--help` and the start are quiet and clear, Ctrl-C exits cleanly."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPOSITORY, run_command

TRAIN = REPOSITORY / "recipes" / "ranking" / "train.py"
START_UP_NOISE = ("absl::InitializeLog", "cuda", "cuInit", "oneDNN", "TF_ENABLE_ONEDNN_OPTS")


def _start(tmp_path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path, process, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_a_killed_run_rerun_with_another_loss_is_refused(train_recipe, tmp_path):
    model_dir = tmp_path / "run"
    crashed = train_recipe("ranking", "--smoke", "--loss=ranknet", "--simulate_crash_at_step=3",
                         "--backup_seconds=0", f"--model_dir={model_dir}")
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    other = train_recipe("ranking", "--smoke", "--loss=listmle", f"--model_dir={model_dir}")
    assert other.returncode == 2, other
    assert "another configuration" in other.stderr and "--loss" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "epoch" not in other.stdout  # nothing trained
    assert not (model_dir / "results.json").exists()
    resumed = train_recipe("ranking", "--smoke", "--loss=ranknet", f"--model_dir={model_dir}")
    assert resumed.returncode == 0, resumed
    epochs = [line["epoch"] for line in resumed.record["history"]]
    assert epochs == sorted(set(epochs))  # each epoch once


def test_a_finished_run_is_not_redone_and_overwrite_starts_over(train_recipe, tmp_path):
    model_dir = tmp_path / "run"
    first = train_recipe("ranking", "--smoke", f"--model_dir={model_dir}")
    assert first.returncode == 0, first
    assert (model_dir / "model.keras").exists() and (model_dir / "saved_model").is_dir()
    started = time.time()
    again = train_recipe("ranking", "--smoke", f"--model_dir={model_dir}")
    assert again.returncode == 0, again
    assert "already" in again.stdout and "epoch" not in again.stdout.replace("already", "")
    assert time.time() - started < 60
    assert json.loads((model_dir / "results.json").read_text()) == first.record
    fresh = train_recipe("ranking", "--smoke", "--overwrite", f"--model_dir={model_dir}")
    assert fresh.returncode == 0, fresh
    assert "epoch 1/" in fresh.stdout
    assert len(fresh.record["history"]) == len(first.record["history"])


def test_a_second_live_run_in_the_directory_is_refused(tmp_path):
    """The first run is a process (it must be alive while the second starts); the second
    and the third run in this process, as their commands would."""
    model_dir = tmp_path / "run"
    first = _start(tmp_path, "--smoke", "--epochs=500", f"--model_dir={model_dir}")
    try:
        _wait_for(model_dir / "metrics.jsonl", first)
        status, _, stderr = run_command("ranking", ["--smoke", "--epochs=500",
                                                    f"--model_dir={model_dir}"])
        assert status == 2, stderr
        assert "in use by another run" in stderr
    finally:
        first.kill()
        first.communicate()
    # The killed run's lock is stale: the same command resumes.
    assert (model_dir / "lock").exists()
    status, _, stderr = run_command("ranking", ["--smoke", "--epochs=2", "--overwrite",
                                                f"--model_dir={model_dir}"])
    assert status == 0, stderr


@pytest.mark.parametrize("sent, status, line", [
    (signal.SIGINT, 130, "interrupted; rerun the same command to resume"),
    (signal.SIGTERM, 143, "terminated (SIGTERM); rerun the same command to resume"),
])
def test_ctrl_c_and_sigterm_print_one_line_and_release_the_lock(tmp_path, sent, status, line):
    model_dir = tmp_path / "run"
    process = _start(tmp_path, "--smoke", "--epochs=500", f"--model_dir={model_dir}")
    _wait_for(model_dir / "metrics.jsonl", process)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status
    assert stderr.strip().splitlines() == [line]
    assert not (model_dir / "lock").exists()


def test_help_lists_the_shared_flags_and_exits_0():
    completed = subprocess.run([sys.executable, str(TRAIN), "--help"], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    for flag in ("--smoke", "--epochs", "--dataset", "--model_dir", "--strategy",
                 "--global_batch_size", "--publish", "--overwrite", "--loss"):
        assert flag in completed.stdout
    assert len(completed.stdout.splitlines()) < 120  # not absl's and TensorFlow's 200 lines
    assert not any(noise in completed.stderr for noise in START_UP_NOISE)


@pytest.mark.parametrize("args, message", [
    (["--dataset=grouplens:/no/such/folder"], "no/such/folder"),
    (["--global_batch_size=0"], "global_batch_size"),
])
def test_bad_input_leaves_no_run_directory(train_recipe, tmp_path, args, message):
    model_dir = tmp_path / "never"
    result = train_recipe("ranking", "--smoke", *args, f"--model_dir={model_dir}")
    assert result.returncode != 0 and message in result.stderr
    assert not model_dir.exists()
