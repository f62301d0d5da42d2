"""Test-session set-up shared by every test.

TensorFlow fixes its devices when the first op runs, and allows one MirroredStrategy
per process: the CPU is split into 2 logical devices here, before anything else, and
tests that mirror take the one strategy from the `mirrored_strategy` fixture (or from
`common.distribute.get_strategy`, which returns the same object).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from common import distribute

REPOSITORY = Path(__file__).resolve().parent.parent

distribute.split_cpu(2)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """MirroredStrategy over the 2 logical CPUs (the same object all session)."""
    return distribute.get_strategy("mirrored", num_cpu_devices=2)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Each test starts with float32 (a recipe run may set mixed precision)."""
    tf.keras.mixed_precision.set_global_policy("float32")
    yield


@pytest.fixture
def repository() -> Path:
    return REPOSITORY


class RecipeRun:
    """What a `python recipes/<name>/train.py ...` subprocess did."""

    def __init__(self, completed, model_dir: Path):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.model_dir = model_dir
        results_path = model_dir / "results.json"
        self.record = json.loads(results_path.read_text()) if results_path.exists() else None

    def __repr__(self):
        return f"RecipeRun(returncode={self.returncode}, stderr=...{self.stderr[-2000:]})"


@pytest.fixture
def run_recipe(tmp_path):
    """Runs a recipe's real command line in a fresh process; returns a `RecipeRun`.

    Recipes define absl flags at import, and several recipes in one process would
    clash, so each run is its own process (as a user's is). `--model_dir` defaults to a
    temporary directory; pass one in `args` to choose it.
    """

    def run(recipe: str, *args: str, timeout: float = 600, env: dict | None = None) -> RecipeRun:
        model_dir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
        if not any(arg.startswith("--model_dir") for arg in args):
            args = (*args, f"--model_dir={model_dir}")
        else:
            model_dir = Path(next(a for a in args if a.startswith("--model_dir")).split("=", 1)[1])
        completed = subprocess.run(
            [sys.executable, str(REPOSITORY / "recipes" / recipe / "train.py"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        return RecipeRun(completed, model_dir)

    return run


@pytest.fixture
def bad_inputs(tmp_path):
    """Runs each of `cases` ({name: argv}) of one recipe as its command would, all in one
    fresh process (TensorFlow imports once); returns {name: {"status", "stderr",
    "stdout", "written"}}. status is the exit status (1: absl refused a flag, 2: the
    recipe refused an input) or "traceback"; written lists what the case left in its
    own --model_dir (added to argv). Runs in tmp_path, so default directories land there.
    """

    def run(recipe: str, cases: dict, timeout: float = 900) -> dict:
        cases_file = tmp_path / "cases.json"
        cases_file.write_text(json.dumps(cases))
        completed = subprocess.run(
            [sys.executable, str(REPOSITORY / "tests" / "bad_inputs_driver.py"), recipe,
             str(cases_file), str(tmp_path / "runs")],
            cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
        outcomes = {}
        for line in completed.stdout.splitlines():
            if line.startswith("{"):
                outcome = json.loads(line)
                outcomes[outcome.pop("name")] = outcome
        assert set(outcomes) == set(cases), completed.stderr[-3000:]
        return outcomes

    return run
