"""A recipe's config: its fields are its flags, checked when made; the absl command line
made from it (flagfiles, --smoke, the preset name, exit statuses)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import ClassVar

from common import cli, config
from common.config import Shared

import pytest

from tests.common import REPOSITORY


@dataclasses.dataclass(frozen=True)
class Toy(Shared):
    SMOKE: ClassVar[dict] = {"epochs": 2, "hidden_units": (4,)}

    epochs: int = config.shared("epochs", 20)
    loss: str = config.setting("ranknet", "Loss.", choices=("ranknet", "hinge"))
    l2: float = config.setting(1e-3, "L2 penalty.", low=0.0, high=1.0)
    hidden_units: tuple[int, ...] = config.setting((64, 16), "Widths.", widths=True)
    pos_weight: float | None = config.setting(None, "Weight.", low=0.0, low_open=True)
    losses: tuple[str, ...] = config.setting(("a", "b"), "Losses.", choices=("a", "b", "c"))

    def check(self):
        if self.loss == "hinge" and self.l2 == 0:
            raise ValueError("--l2 must be > 0 with --loss=hinge")


@pytest.mark.parametrize("argv, flag", [
    (["--epochs=0"], "epochs"),
    (["--epochs=-3"], "epochs"),
    (["--global_batch_size=0"], "global_batch_size"),
    (["--learning_rate=0"], "learning_rate"),
    (["--learning_rate=inf"], "learning_rate"),
    (["--learning_rate=nan"], "learning_rate"),
    (["--learning_rate=1e30"], "learning_rate"),
    (["--strategy=horovod"], "strategy"),
    (["--num_cpu_devices=0"], "num_cpu_devices"),
    (["--data_dir=/no/such/directory"], "data_dir"),
    (["--simulate_crash_at_step=-1"], "simulate_crash_at_step"),
    (["--backup_seconds=inf"], "backup_seconds"),
    (["--l2=inf"], "l2"),
    (["--l2=2"], "l2"),
    (["--hidden_units=64,,16"], "hidden_units"),
    (["--hidden_units=0"], "hidden_units"),
    (["--hidden_units=-3"], "hidden_units"),
    (["--hidden_units="], "hidden_units"),
    (["--pos_weight=0"], "pos_weight"),
    (["--losses=a,z"], "losses"),
    (["--loss=x"], "loss"),
    (["--loss=hinge", "--l2=0"], "l2"),  # the recipe's check across fields
])
def test_a_bad_value_is_refused_naming_the_flag(argv, flag):
    with pytest.raises(cli.FlagError, match=rf"--{flag}\b"):
        cli.parse(Toy, argv)


def test_the_same_checks_hold_when_a_test_builds_the_config():
    with pytest.raises(ValueError, match="--l2"):
        Toy(l2=float("inf"))
    assert Toy(hidden_units=[8, 4]).hidden_units == (8, 4)  # a list becomes the tuple


def test_smallest_good_values_pass(tmp_path):
    parsed = cli.parse(Toy, ["--epochs=1", "--global_batch_size=1", "--learning_rate=1e-9",
                             "--strategy=mirrored", f"--data_dir={tmp_path}", "--l2=0",
                             "--hidden_units=1", "--pos_weight=1e-9", "--losses=c"])
    assert (parsed.epochs, parsed.global_batch_size, parsed.learning_rate) == (1, 1, 1e-9)
    assert (parsed.hidden_units, parsed.losses, parsed.data_dir) == ((1,), ("c",),
                                                                     str(tmp_path))


def test_each_parse_starts_from_the_defaults():
    assert cli.parse(Toy, ["--epochs=3", "--publish", "--seed=7"]).epochs == 3
    again = cli.parse(Toy, [])
    assert (again.epochs, again.publish, again.seed) == (20, False, 42)


def test_flagfile_values_and_command_line_override(tmp_path):
    flagfile = tmp_path / "tfrs_listwise.cfg"
    flagfile.write_text("--epochs=7\n--learning_rate=0.05\n")
    parsed = cli.parse(Toy, [f"--flagfile={flagfile}"])
    assert (parsed.epochs, parsed.learning_rate, parsed.preset) == (7, 0.05, "tfrs_listwise")
    parsed = cli.parse(Toy, [f"--flagfile={flagfile}", "--epochs=2"])
    assert (parsed.epochs, parsed.learning_rate) == (2, 0.05)


@pytest.mark.parametrize("argv, expected", [
    (["--flagfile=a/b/tfrs_listwise.cfg"], "tfrs_listwise"),
    (["--flagfile", "x.cfg"], "x"),
    (["--epochs=3", "--flagfile", "configs/x.cfg", "--seed=1"], "x"),
    (["--flagfile=a.cfg", "--flagfile=b/c.cfg"], "c"),  # the last one wins
    ([], "default"),
    (["--epochs=3"], "default"),
])
def test_preset_name(argv, expected):
    assert cli.preset_name(argv) == expected


def test_smoke_sets_its_values_but_not_those_on_the_command_line():
    assert cli.parse(Toy, ["--smoke"]).hidden_units == (4,)
    parsed = cli.parse(Toy, ["--smoke", "--epochs=5"])
    assert (parsed.epochs, parsed.hidden_units) == (5, (4,))
    assert cli.parse(Toy, ["--hidden_units=8"]).hidden_units == (8,)


def test_flags_are_what_the_command_line_gives_and_go_into_json():
    flags = cli.parse(Toy, ["--epochs=3", "--strategy=cpu"]).flags
    assert flags["hidden_units"] == ["64", "16"]  # as absl's list flags give them
    assert (flags["epochs"], flags["strategy"], flags["global_batch_size"]) == (3, "cpu", 256)
    assert "verbosity" not in flags and "preset" not in flags and "command" not in flags
    assert json.loads(json.dumps(flags)) == flags
    assert "strategy" not in cli.parse(Toy, []).configuration  # how, not what


def test_two_configs_in_one_process_do_not_clash():
    @dataclasses.dataclass(frozen=True)
    class Other(Shared):
        hidden_units: tuple[int, ...] = config.setting((3,), "Other widths.", widths=True)

    assert cli.parse(Other, ["--hidden_units=5"]).hidden_units == (5,)
    assert cli.parse(Toy, ["--hidden_units=6"]).hidden_units == (6,)


_CONFIG = """
import dataclasses
from common import cli, config

@dataclasses.dataclass(frozen=True)
class C(config.Shared):
    l2: float = config.setting(0.1, "L2.", low=0.0)

def train(c):
    print("train ran with epochs", c.epochs, "l2", c.l2)
"""
_PROGRAM = _CONFIG + "\ncli.main(C, train)\n"


def test_a_bad_value_on_the_command_line_exits_1_in_one_line():
    completed = subprocess.run([sys.executable, "-c", _PROGRAM, "--epochs=0"], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert "--epochs" in completed.stderr
    assert "Traceback" not in completed.stderr and "train ran" not in completed.stdout


@pytest.mark.parametrize("argument, flag", [
    ("--epochs=0", "epochs"),
    ("--learning_rate=-1", "learning_rate"),
    ("--strategy=horovod", "strategy"),
    ("--l2=inf", "l2"),
    ("--no_such_flag=1", "no_such_flag"),
])
def test_a_bad_value_is_refused_with_a_message_naming_its_flag(argument, flag):
    """What `cli.main` prints before it exits 1 (the process test above): `FlagError`."""
    namespace = {}
    exec(_CONFIG, namespace)  # the program's config class, without running it
    with pytest.raises(cli.FlagError) as refused:
        cli.parse(namespace["C"], [argument])
    assert f"--{flag}" in str(refused.value) or f"'{flag}'" in str(refused.value)


def test_good_values_on_the_command_line_run_train():
    completed = subprocess.run([sys.executable, "-c", _PROGRAM, "--epochs=4", "--l2=0.5",
                                "--verbosity=0"],
                               cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "train ran with epochs 4 l2 0.5" in completed.stdout
