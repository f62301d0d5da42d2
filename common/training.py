"""The shared run: start (seed, strategy, run directory), fit with the standard
callbacks, finish (the results record). A recipe's `train` calls these in order:

    run = training.start("ranking")
    with run.strategy.scope():
        model = build_model(...)
        model.compile(optimizer=..., loss=...)
    stream, steps = training.training_stream(train_examples, run)
    training.fit(run, model, stream, steps_per_epoch=steps, validation_data=...)
    return training.finish(run, metrics=..., dataset=..., model=model, ...)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from typing import Callable

from absl import app, logging

from common import distribute, results, timing
from common.flags import FLAGS, config_name
from common import flags as common_flags

BACKUP_SUBDIR = "backup"


@dataclasses.dataclass
class Run:
    """One training run: where it writes, how it distributes, what it was asked."""

    recipe: str
    config: str
    command: str
    model_dir: Path
    strategy: tf.distribute.Strategy
    is_chief: bool
    started: float
    timer: timing.StepTimer | None = None

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def start(recipe: str, argv: list[str] | None = None) -> Run:
    """Builds the strategy, seeds everything, and prepares the run directory.

    The strategy comes first: multi-worker and logical CPU devices must be set up
    before any other TensorFlow op runs.
    """
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.num_cpu_devices)
    if FLAGS.global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"--global_batch_size={FLAGS.global_batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress
    tf.keras.utils.set_random_seed(FLAGS.seed)
    tf.config.experimental.enable_op_determinism()
    if FLAGS.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        tf.keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    else:
        tf.keras.mixed_precision.set_global_policy("float32")

    config = config_name(argv)
    model_dir = Path(
        FLAGS.model_dir
        or Path("runs") / recipe / config / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    ).resolve()
    chief = distribute.is_chief(strategy)
    if not chief:
        # Other workers write their checkpoints and logs beside the chief's, never over them.
        model_dir = model_dir / f"worker-{strategy.cluster_resolver.task_id}"
    model_dir.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", f"recipes/{recipe}/train.py", *args])
    results.write({"command": command, "flags": common_flags.values()}, model_dir / "flags.json")
    run = Run(
        recipe=recipe,
        config=config,
        command=command,
        model_dir=model_dir,
        strategy=strategy,
        is_chief=chief,
        started=time.time(),
    )
    print(
        f"[{recipe}] config={config} strategy={FLAGS.strategy} replicas={run.num_replicas} "
        f"run directory={model_dir}",
        flush=True,
    )
    return run


def _backup_dir(run: Run, name: str) -> Path:
    return run.model_dir / BACKUP_SUBDIR / name if name else run.model_dir / BACKUP_SUBDIR


def saved_epoch(run: Run, name: str = "") -> int:
    """The number of epochs the backup of model `name` holds (0 without a backup)."""
    checkpoint = tf.train.latest_checkpoint(str(_backup_dir(run, name) / "chief"))
    if not checkpoint:
        return 0
    reader = tf.train.load_checkpoint(checkpoint)
    for name in reader.get_variable_to_shape_map():
        if name.startswith("ckpt_saved_epoch"):
            return int(reader.get_tensor(name)) + 1
    return 0


def training_stream(
    examples: tf.data.Dataset, run: Run, shuffle_buffer: int | None = None, name: str = ""
) -> tuple[tf.data.Dataset, int]:
    """Endless global batches of `examples`, reshuffled each epoch; and steps per epoch.

    Epoch e's order depends only on (seed, e), and a resumed run starts at the epoch its
    backup holds: it sees the same batches as an uninterrupted run. The remainder that
    does not fill a global batch is dropped each epoch, so every step has the full
    global batch and splits evenly over replicas (an uneven split would skew the mean).
    `name` is that of the model trained on it, when a run trains several (see `fit`).
    """
    size = int(examples.cardinality())
    if size < 0:
        raise ValueError("training_stream needs a dataset of known size (not repeated)")
    batch = FLAGS.global_batch_size
    steps = size // batch
    if steps == 0:
        raise ValueError(
            f"--global_batch_size={batch} is larger than the {size} training examples"
        )
    buffer = shuffle_buffer or size
    seed = FLAGS.seed

    def one_epoch(epoch):
        return examples.shuffle(buffer, seed=seed * 100_003 + epoch).batch(
            batch, drop_remainder=True
        )

    first_epoch = saved_epoch(run, name)
    if first_epoch:
        print(f"[{run.recipe}] resuming {name or 'the model'} after epoch {first_epoch}",
              flush=True)
    stream = tf.data.Dataset.range(first_epoch, 1 << 30).flat_map(one_epoch)
    return stream.prefetch(tf.data.AUTOTUNE), steps


class _EpochLog(tf.keras.callbacks.Callback):
    """Appends each epoch's metrics as one JSON line and prints a progress line."""

    def __init__(self, run: Run, epochs: int, name: str):
        super().__init__()
        self.run, self.epochs, self.name = run, epochs, name
        self.path = run.model_dir / "metrics.jsonl"
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        seconds = time.perf_counter() - self._epoch_start
        with self.path.open("a") as log:
            tag = {"model": self.name} if self.name else {}
            line = {**tag, "epoch": epoch + 1, "seconds": seconds, **logs}
            log.write(json.dumps(results.plain(line)) + "\n")
        shown = "  ".join(f"{key}={value:.4g}" for key, value in logs.items())
        where = f"{self.name} " if self.name else ""
        print(f"[{self.run.recipe}] {where}epoch {epoch + 1}/{self.epochs} {seconds:.1f}s  "
              f"{shown}", flush=True)


class _CrashAt(tf.keras.callbacks.Callback):
    """Raises after `step` training steps: the fault injected by --simulate_crash_at_step."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.done = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            raise RuntimeError(f"simulated crash after {self.step} steps")


def fit(
    run: Run,
    model: tf.keras.Model,
    train_data: tf.data.Dataset,
    *,
    steps_per_epoch: int | None = None,
    validation_data=None,
    epochs: int | None = None,
    callbacks: list | tuple = (),
    name: str = "",
) -> tf.keras.callbacks.History:
    """`model.fit` with timing, TensorBoard, BackupAndRestore, TerminateOnNaN, JSON log.

    The backup is saved per epoch: an integer `save_freq` would resume at the saved step
    with a restarted data iterator, silently training on the wrong batches. A run that
    trains several models (seeds, baselines) gives each a `name`: its own backup, and
    its own tag in metrics.jsonl. The step timing kept is that of the last model.
    """
    epochs = epochs or FLAGS.epochs
    run.timer = timing.StepTimer(FLAGS.global_batch_size)
    standard = [
        run.timer,
        tf.keras.callbacks.TerminateOnNaN(),
        tf.keras.callbacks.BackupAndRestore(str(_backup_dir(run, name)), save_freq="epoch"),
        tf.keras.callbacks.TensorBoard(
            str(run.model_dir / "tensorboard" / (name or "model")), profile_batch=0
        ),
        _EpochLog(run, epochs, name),
    ]
    if FLAGS.simulate_crash_at_step:
        standard.append(_CrashAt(FLAGS.simulate_crash_at_step))
    if not model.built:  # BackupAndRestore can only restore into built variables
        with run.strategy.scope():
            model(next(iter(train_data))[0])
    history = model.fit(
        train_data,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=[*standard, *callbacks],
        verbose=0,
    )
    if any(not tf.math.is_finite(value) for value in history.history.get("loss", [])[-1:]):
        raise FloatingPointError("training stopped on a non-finite loss (TerminateOnNaN)")
    return history


def finish(
    run: Run,
    *,
    metrics: dict,
    dataset: dict,
    model: tf.keras.Model | None = None,
    tolerances: dict | None = None,
    baselines: dict | None = None,
    references: list | None = None,
    tables: dict | None = None,
    artifacts: list | tuple = (),
    extra: dict | None = None,
) -> dict:
    """Writes `results.json` in the run directory (and publishes it with --publish).

    `artifacts` are files in the run directory (plots) that are published beside the
    record. Returns the record.
    """
    if not metrics:
        raise ValueError("finish: no metrics to record")
    bad = {name: value for name, value in metrics.items() if not _finite(value)}
    if bad:
        raise FloatingPointError(f"non-finite metrics, nothing recorded: {bad}")
    record = {
        "recipe": run.recipe,
        "config": run.config,
        "command": run.command,
        "metrics": metrics,
        "tolerances": tolerances or {},
        "baselines": baselines or {},
        "references": references or [],
        "tables": tables or {},
        "dataset": dataset,
        "history": history(run),
        "flags": common_flags.values(),
        "seed": FLAGS.seed,
        "strategy": {"name": FLAGS.strategy, "replicas": run.num_replicas},
        "timing": {
            **(run.timer.summary() if run.timer else {}),
            "wall_seconds": time.time() - run.started,
        },
        "device": timing.device_info(),
        "versions": results.versions(),
        "git_commit": results.git_commit(),
        "weights_fingerprint": results.fingerprint(*model.get_weights()) if model else None,
        **(extra or {}),
    }
    results.write(record, run.model_dir / "results.json")
    if FLAGS.publish and run.is_chief:
        target = results.published_path(run.recipe, run.config)
        target.parent.mkdir(parents=True, exist_ok=True)
        for artifact in map(Path, artifacts):
            shutil.copy(artifact, target.parent / f"{run.config}-{artifact.name}")
        results.write(record, target)
        logging.info("published %s", target)
        print(f"[{run.recipe}] published {target}", flush=True)
    print_summary(record)
    return record


def history(run: Run) -> list[dict]:
    """Per-epoch metrics of the run so far, resumed epochs included (metrics.jsonl)."""
    path = run.model_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finite(value) -> bool:
    try:
        return bool(tf.math.is_finite(float(value)))
    except (TypeError, ValueError):
        return True


def print_summary(record: dict) -> None:
    """Prints the metrics beside the baselines (with intervals where recorded)."""
    metrics = record["metrics"]
    baselines = record.get("baselines", {})
    names = [name for name in metrics if not name.endswith(("_ci_low", "_ci_high"))]
    width = max(len(name) for name in names) + 2
    print(f"\n[{record['recipe']}] results of config {record['config']}: {record['command']}")
    print(f"{'metric':<{width}}{'this run':>26}" + "".join(f"{b[:24]:>26}" for b in baselines))
    for name in names:
        row = f"{name:<{width}}{_show(metrics, name):>26}"
        row += "".join(f"{_show(values, name):>26}" for values in baselines.values())
        print(row)
    for reference in record.get("references", []):
        print(
            f"  reference: {reference['name']} {reference.get('metric', '')} = "
            f"{reference['value']} ({reference['source']})"
        )
    timing_info = record.get("timing", {})
    if "examples_per_second" in timing_info:
        print(
            f"  timing: median step {timing_info['median_step_seconds'] * 1000:.1f} ms, "
            f"{timing_info['examples_per_second']:.0f} examples/s, "
            f"wall {timing_info['wall_seconds']:.1f} s"
        )
    print(flush=True)


def _show(values: dict, name: str) -> str:
    """`values[name]`, with its interval "[low, high]" when recorded."""
    value = values.get(name)
    if value is None:
        return "-"
    if not isinstance(value, float):
        return str(value)
    low, high = values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high")
    if low is None or high is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def cli(train: Callable[[], dict]) -> None:
    """Runs a recipe's `train()` as a command: absl parses the flags first.

    Bad input (ValueError, a missing file, a non-finite result) prints one line that
    names the problem and exits with status 2, without a traceback.
    """

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            train()
        except (ValueError, OSError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(main)
