"""The shared flags: validators, parsing, the config name, the values recorded."""

import json
import subprocess
import sys

import absl.logging  # noqa: F401  (defines absl's logging flags, which values() must leave out)
import pytest
from absl import flags

from common import flags as common_flags
from tests.common import REPOSITORY

FLAGS = flags.FLAGS

PROJECT_FLAGS = {
    "epochs", "global_batch_size", "learning_rate", "seed", "strategy", "num_cpu_devices",
    "model_dir", "publish", "smoke", "jit_compile", "mixed_precision", "dataset", "data_dir",
}
ABSL_FLAGS = {"verbosity", "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold"}


@pytest.fixture(autouse=True)
def _unparsed_flags():
    yield
    FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--epochs=0"], "epochs"),
        (["--epochs=-3"], "epochs"),
        (["--global_batch_size=0"], "global_batch_size"),
        (["--learning_rate=0"], "learning_rate"),
        (["--learning_rate=-1"], "learning_rate"),
        (["--strategy=horovod"], "strategy"),
        (["--num_cpu_devices=0"], "num_cpu_devices"),
        (["--data_dir=/no/such/directory"], "data_dir"),
        (["--simulate_crash_at_step=-1"], "simulate_crash_at_step"),
    ],
)
def test_bad_value_raises_naming_the_flag(argv, flag):
    with pytest.raises(flags.IllegalFlagValueError, match=rf"--{flag}\b"):
        common_flags.parse(argv)


def test_smallest_good_values_pass(tmp_path):
    # The validators reject the bad values above, not everything.
    common_flags.parse([
        "--epochs=1", "--global_batch_size=1", "--learning_rate=1e-9", "--strategy=mirrored",
        "--num_cpu_devices=1", f"--data_dir={tmp_path}",
    ])
    assert (FLAGS.epochs, FLAGS.global_batch_size, FLAGS.learning_rate) == (1, 1, 1e-9)
    assert FLAGS.strategy == "mirrored"
    assert FLAGS.data_dir == str(tmp_path)


def test_parse_resets_values_between_calls():
    common_flags.parse(["--epochs=3", "--publish", "--strategy=cpu", "--seed=7"])
    assert (FLAGS.epochs, FLAGS.publish, FLAGS.strategy, FLAGS.seed) == (3, True, "cpu", 7)
    common_flags.parse([])
    assert (FLAGS.epochs, FLAGS.publish, FLAGS.strategy, FLAGS.seed) == (10, False, "auto", 42)


def test_parse_after_a_failed_parse_starts_from_defaults():
    with pytest.raises(flags.IllegalFlagValueError):
        common_flags.parse(["--epochs=4", "--learning_rate=0"])
    common_flags.parse(["--seed=1"])
    assert (FLAGS.epochs, FLAGS.learning_rate, FLAGS.seed) == (10, 1e-3, 1)


def test_set_defaults_changes_the_default_but_not_an_explicit_value():
    original = FLAGS["epochs"].default
    try:
        common_flags.set_defaults(epochs=5)
        common_flags.parse([])
        assert FLAGS.epochs == 5
        common_flags.parse(["--epochs=2"])
        assert FLAGS.epochs == 2
    finally:
        FLAGS.set_default("epochs", original)


def test_flagfile_values_and_command_line_override(tmp_path):
    flagfile = tmp_path / "tfrs_listwise.cfg"
    flagfile.write_text("--epochs=7\n--learning_rate=0.05\n")
    common_flags.parse([f"--flagfile={flagfile}"])
    assert (FLAGS.epochs, FLAGS.learning_rate) == (7, 0.05)
    common_flags.parse([f"--flagfile={flagfile}", "--epochs=2"])
    assert (FLAGS.epochs, FLAGS.learning_rate) == (2, 0.05)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--flagfile=a/b/tfrs_listwise.cfg"], "tfrs_listwise"),
        (["--flagfile", "x.cfg"], "x"),
        (["--epochs=3", "--flagfile", "configs/x.cfg", "--seed=1"], "x"),
        (["--flagfile=a.cfg", "--flagfile=b/c.cfg"], "c"),  # the last one wins
        ([], "default"),
        (["--epochs=3"], "default"),
    ],
)
def test_config_name(argv, expected):
    assert common_flags.config_name(argv) == expected


def test_config_name_reads_sys_argv_by_default(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--flagfile=recipes/ranking/configs/q.cfg"])
    assert common_flags.config_name() == "q"


def test_values_has_the_project_flags_and_not_absl_ones():
    common_flags.parse(["--epochs=3", "--strategy=cpu"])
    assert ABSL_FLAGS <= set(FLAGS)  # they exist in this process, so leaving them out counts
    recorded = common_flags.values()
    assert PROJECT_FLAGS <= set(recorded)
    assert not ABSL_FLAGS & set(recorded)
    assert recorded["epochs"] == 3
    assert recorded["strategy"] == "cpu"
    assert recorded["global_batch_size"] == 256
    assert json.loads(json.dumps(recorded)) == recorded  # goes into JSON records as is


# A program that defines nothing itself: the shared flags come with `common.flags`.
_PROGRAM = """
from absl import app
import common.flags

def main(argv):
    print("main ran with epochs", common.flags.FLAGS.epochs)

app.run(main)
"""


@pytest.mark.parametrize(
    "argument, flag",
    [
        ("--epochs=0", "epochs"),
        ("--learning_rate=-1", "learning_rate"),
        ("--strategy=horovod", "strategy"),
        ("--data_dir=/no/such/directory", "data_dir"),
    ],
)
def test_app_run_with_bad_value_exits_nonzero_naming_flag_without_traceback(argument, flag):
    completed = subprocess.run(
        [sys.executable, "-c", _PROGRAM, argument],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert f"--{flag}" in output
    assert "Traceback" not in output
    assert "main ran" not in output


def test_app_run_with_good_values_runs_main():
    # The control for the test above: the same program does run with good values.
    completed = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "--epochs=4"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "main ran with epochs 4" in completed.stdout
