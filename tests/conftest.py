"""Test-session set-up shared by every test.

TensorFlow fixes its devices when the first op runs, and allows one MirroredStrategy
per process: the CPU is split into 2 logical devices here, before anything else, and
tests that mirror take the one strategy from the `mirrored_strategy` fixture (or from
`common.distribute.get_strategy`, which returns the same object).
"""

import contextlib
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import traceback
import types
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, distribute

import pytest
import tensorflow as tf

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

    For what only a process shows (exit statuses, signals, start-up output, workers);
    everything else runs in this process through `train_recipe`. `--model_dir` defaults
    to a temporary directory; pass one in `args` to choose it.
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


def run_two_workers(recipe: str, args: tuple, model_dir: Path) -> tuple[dict, dict]:
    """Runs `recipes/<recipe>/train.py *args --strategy=multi_worker` as two worker
    processes on localhost (TF_CONFIG); asserts both exit 0 and returns their records
    (the chief's, then worker 1's)."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(REPOSITORY / "recipes" / recipe / "train.py"), *args,
             "--strategy=multi_worker", f"--model_dir={model_dir}"],
            cwd=model_dir.parent, env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return (json.loads((model_dir / "results.json").read_text()),
            json.loads((model_dir / "worker-1" / "results.json").read_text()))


def run_commands(recipe: str, cases: dict, runs_dir: Path) -> dict:
    """Runs each of `cases` ({name: argv}) of one recipe in this process, as its command
    would: `cli.parse` into the recipe's Config, then `cli.run`. Returns {name: {"status",
    "stderr", "stdout", "written"}}: status is the exit status (1: a flag refused, 2: an
    input refused) or "traceback"; written lists what the case left in its own
    --model_dir (added to argv unless argv names one)."""
    outcomes = {}
    for name, argv in cases.items():
        given = [arg for arg in argv if arg.startswith("--model_dir=")]
        model_dir = Path(given[-1].split("=", 1)[1]) if given else runs_dir / name
        if not given:
            argv = [*argv, f"--model_dir={model_dir}"]
        status, stdout, stderr = run_command(recipe, argv)
        written = sorted(str(path.relative_to(model_dir))
                         for path in model_dir.rglob("*")) if model_dir.exists() else []
        outcomes[name] = {"status": status, "stderr": stderr, "stdout": stdout[-2000:],
                          "written": written}
    return outcomes


def run_command(recipe: str, argv: list[str]) -> tuple:
    """(status, stdout, stderr) of `python recipes/<recipe>/train.py *argv`, run in this
    process: status 1 for a refused flag, "traceback" for an unexpected exception."""
    module = importlib.import_module(f"recipes.{recipe}.train")
    config_class = importlib.import_module(f"recipes.{recipe}.config").Config
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            config = cli.parse(config_class, argv)
        except cli.FlagError as error:  # cli.main prints this line and exits 1
            status = 1
            print(f"FATAL Flags parsing error: {error}", file=sys.stderr)
        else:
            try:
                status = cli.run(module.train, config)
            except Exception:  # noqa: BLE001  (a traceback is what is tested for)
                status = "traceback"
                traceback.print_exc()
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def train_recipe(tmp_path, monkeypatch):
    """`run_recipe`'s twin in this process (no interpreter or TensorFlow start): runs
    `recipes/<recipe>/train.py *args` through `cli.parse` and `cli.run` in tmp_path;
    returns a `RecipeRun` whose returncode is the exit status the command would have
    ("traceback" for an unexpected exception)."""
    monkeypatch.chdir(tmp_path)

    def run(recipe: str, *args: str, **_process_options) -> RecipeRun:
        model_dir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
        given = [arg for arg in args if arg.startswith("--model_dir")]
        if given:
            model_dir = Path(given[-1].split("=", 1)[1])
        else:
            args = (*args, f"--model_dir={model_dir}")
        status, stdout, stderr = run_command(recipe, list(args))
        return RecipeRun(types.SimpleNamespace(returncode=status, stdout=stdout,
                                               stderr=stderr), model_dir)

    return run


def assert_refused(outcomes: dict, expected: dict) -> None:
    """Every case of `run_commands`'s `outcomes` was refused (status 1 or 2) with stderr
    holding `expected[name]`, and left nothing in its run directory."""
    for name, message in expected.items():
        outcome = outcomes[name]
        assert outcome["status"] in (1, 2), (name, outcome["stderr"][-2000:])
        assert message in outcome["stderr"], (name, outcome["stderr"][-2000:])
        assert outcome["written"] == [], (name, outcome["written"])


@pytest.fixture
def bad_inputs(tmp_path, monkeypatch):
    """`run(recipe, cases)`: `run_commands` in tmp_path (default run directories land
    there), in this process."""
    monkeypatch.chdir(tmp_path)

    def run(recipe: str, cases: dict) -> dict:
        return run_commands(recipe, cases, tmp_path / "runs")

    return run
