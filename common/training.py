"""The shared run: start, fit with the standard callbacks, save the model, finish.

A recipe's `train` calls these in order, each with its inputs as arguments:

    run = training.start(RECIPE, common_flags.settings())
    examples = data.load(...)                      # validated: nothing is written yet
    with run.strategy.scope():
        network = model.build(...)
        network.compile(optimizer=..., loss=...)
    training.fit(run, network, examples, epochs=FLAGS.epochs)
    training.save_model(run, network, serving=model.serving(network))
    return training.finish(run, metrics=..., dataset=..., ...)

A run directory belongs to one configuration (`run.json` holds its flags): a rerun with
the same flags resumes it, a finished one is not redone, another configuration is
refused, and a lock keeps a second live run out. The directory is created by the first
write (fit, save_model, `run.path`, finish), after the data has been loaded and checked,
so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from absl import app, logging

from common import distribute, intervals, results, rundir, timing
from common import flags as common_flags
from common.rundir import AlreadyFinished  # noqa: F401  (part of this module's interface)

BACKUP_SUBDIR = "backup"
NETWORKS_SUBDIR = "networks"


@dataclasses.dataclass
class Run:
    """One training run: where it writes, how it distributes, what it was asked."""

    recipe: str
    settings: common_flags.Settings
    model_dir: Path
    strategy: tf.distribute.Strategy
    is_chief: bool
    started: float
    timer: timing.StepTimer | None = None
    models: dict = dataclasses.field(default_factory=dict)
    opened: bool = False

    @property
    def config(self) -> str:
        return self.settings.config

    @property
    def command(self) -> str:
        return self.settings.command

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def global_batch_size(self) -> int:
        return self.settings.global_batch_size

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def path(self, name: str) -> Path:
        """`name` inside the run directory, which this creates (and locks) if need be."""
        if not self.opened:
            rundir.open_directory(self.model_dir, self.recipe, self.settings)
            self.opened = True
        return self.model_dir / name


def start(recipe: str, settings: common_flags.Settings) -> Run:
    """Builds the strategy, seeds everything, and checks the run directory.

    The strategy comes first: multi-worker and logical CPU devices must be set up before
    any other TensorFlow op runs. Raises ValueError if the directory is another live
    run's or another configuration's, and `AlreadyFinished` if it holds this
    configuration's finished run (unless `settings.overwrite`).
    """
    strategy = distribute.get_strategy(settings.strategy, settings.num_cpu_devices)
    if settings.global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"--global_batch_size={settings.global_batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    tf.keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    if settings.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        tf.keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    else:
        tf.keras.mixed_precision.set_global_policy("float32")

    model_dir = Path(settings.model_dir or rundir.default_directory(recipe, settings.config))
    model_dir = model_dir.resolve()
    chief = distribute.is_chief(strategy)
    if not chief:
        # Other workers write their checkpoints and logs beside the chief's, never over them.
        model_dir = model_dir / f"worker-{strategy.cluster_resolver.task_id}"
    rundir.check_directory(model_dir, settings)
    run = Run(recipe=recipe, settings=settings, model_dir=model_dir, strategy=strategy,
              is_chief=chief, started=time.time())
    print(f"[{recipe}] config={settings.config} strategy={settings.strategy} "
          f"replicas={run.num_replicas} run directory={model_dir}", flush=True)
    return run


def _backup_dir(run: Run, name: str) -> Path:
    return run.model_dir / BACKUP_SUBDIR / (name or "model")


def saved_epoch(run: Run, name: str = "") -> int:
    """The number of epochs the backup of network `name` holds (0 without a backup)."""
    checkpoint = tf.train.latest_checkpoint(str(_backup_dir(run, name) / "chief"))
    if not checkpoint:
        return 0
    reader = tf.train.load_checkpoint(checkpoint)
    for variable in reader.get_variable_to_shape_map():
        if variable.startswith("ckpt_saved_epoch"):
            return int(reader.get_tensor(variable)) + 1
    return 0


def training_stream(examples: tf.data.Dataset, *, global_batch_size: int, seed: int,
                    first_epoch: int = 0,
                    shuffle_buffer: int | None = None) -> tuple[tf.data.Dataset, int]:
    """Endless global batches of `examples`, reshuffled each epoch; and steps per epoch.

    Epoch e's order depends only on (seed, e), so a run resumed at `first_epoch` sees the
    same batches as an uninterrupted one. The remainder that does not fill a global
    batch is dropped each epoch: every step has the full global batch and splits evenly
    over replicas (an uneven split would skew the mean).
    """
    size = int(examples.cardinality())
    if size < 0:
        raise ValueError("training_stream needs a dataset of known size (not repeated)")
    steps = size // global_batch_size
    if steps == 0:
        raise ValueError(f"--global_batch_size={global_batch_size} is larger than the "
                         f"{size} training examples")
    buffer = shuffle_buffer or size

    def one_epoch(epoch):
        return examples.shuffle(buffer, seed=seed * 100_003 + epoch).batch(
            global_batch_size, drop_remainder=True)

    stream = tf.data.Dataset.range(first_epoch, 1 << 30).flat_map(one_epoch)
    return stream.prefetch(tf.data.AUTOTUNE), steps


class _EpochLog(tf.keras.callbacks.Callback):
    """Appends each epoch's metrics as one JSON line and prints a progress line."""

    def __init__(self, run: Run, epochs: int, name: str):
        super().__init__()
        self.run, self.epochs, self.name = run, epochs, name
        self.path = run.path("metrics.jsonl")
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


def _network_dir(run: Run, name: str) -> Path:
    return run.model_dir / NETWORKS_SUBDIR / (name or "model")


def fit(
    run: Run,
    model: tf.keras.Model,
    examples: tf.data.Dataset | None = None,
    *,
    epochs: int,
    stream: Callable[[int], tuple[tf.data.Dataset, int]] | None = None,
    validation_data=None,
    callbacks: list | tuple = (),
    name: str = "",
    shuffle_buffer: int | None = None,
) -> tf.keras.callbacks.History | None:
    """`model.fit` with timing, TensorBoard, BackupAndRestore, TerminateOnNaN, JSON log.

    `examples` (unbatched, finite) are streamed by `training_stream`; a recipe with its
    own batching passes `stream(first_epoch) -> (endless batched dataset, steps)`, whose
    epoch e must depend only on (seed, e). The backup is saved per epoch: an integer
    `save_freq` would resume at the saved step with a restarted data iterator, silently
    training on the wrong batches. A run that trains several networks gives each a
    distinct `name`: its own backup, its own tag in metrics.jsonl, and, once trained, its
    weights under networks/<name>, so a rerun of a killed run loads it instead of
    training it again (and returns None).
    """
    if (examples is None) == (stream is None):
        raise ValueError("fit: pass either `examples` or `stream`")
    first_epoch = saved_epoch(run, name)
    if stream is None:
        def stream(first):
            return training_stream(examples, global_batch_size=run.global_batch_size,
                                   seed=run.seed, first_epoch=first,
                                   shuffle_buffer=shuffle_buffer)
    train_data, steps = stream(first_epoch)
    if not model.built:  # BackupAndRestore and load_weights restore into built variables
        with run.strategy.scope():
            model(next(iter(train_data))[0])
    finished = _network_dir(run, name) / "weights.index"
    if finished.exists():
        model.load_weights(str(finished.with_suffix(""))).expect_partial()
        print(f"[{run.recipe}] {name or 'the model'} already trained: loaded", flush=True)
        return None
    if first_epoch:
        print(f"[{run.recipe}] resuming {name or 'the model'} after epoch {first_epoch}",
              flush=True)
    run.timer = timing.StepTimer(run.global_batch_size)
    standard = [
        run.timer,
        tf.keras.callbacks.TerminateOnNaN(),
        tf.keras.callbacks.BackupAndRestore(str(_backup_dir(run, name)), save_freq="epoch"),
        tf.keras.callbacks.TensorBoard(
            str(run.path("tensorboard") / (name or "model")), profile_batch=0),
        _EpochLog(run, epochs, name),
    ]
    if run.settings.simulate_crash_at_step:
        standard.append(_CrashAt(run.settings.simulate_crash_at_step))
    history = model.fit(
        train_data,
        steps_per_epoch=steps,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=[*standard, *callbacks],
        verbose=0,
    )
    losses = history.history.get("loss", [])[-1:]
    if any(not tf.math.is_finite(value) for value in losses):
        raise FloatingPointError("training stopped on a non-finite loss (TerminateOnNaN)")
    model.save_weights(str(finished.with_suffix("")))
    return history


def save_model(run: Run, model: tf.keras.Model, serving=None, name: str = "") -> dict:
    """Keeps a trained network: `model.keras` and a SavedModel in `saved_model/` (for
    name="", the recipe's own model; else `<name>.keras` and `saved_model-<name>/`).

    `serving` is a `tf.function` with an input signature that takes raw inputs; it is the
    SavedModel's "serving_default" signature, which needs no Python code of the project
    to run. Without it the model's own call is exported (`model.export`).
    """
    keras_path = run.path(f"{name}.keras" if name else "model.keras")
    saved_path = run.path(f"saved_model-{name}" if name else "saved_model")
    model.save(keras_path)
    if saved_path.exists():
        shutil.rmtree(saved_path)
    if serving is None:
        model.export(str(saved_path))
    else:
        tf.saved_model.save(model, str(saved_path), signatures={"serving_default": serving})
    paths = {"keras": keras_path.name, "saved_model": saved_path.name}
    run.models[name or "model"] = paths
    return paths


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

    Values in `metrics` and in each baseline may be `intervals.Interval`s: they are
    written as `name`, `name_ci_low`, `name_ci_high`. `artifacts` are files in the run
    directory (plots) published beside the record; models are never published.
    """
    metrics = intervals.flatten(metrics)
    baselines = {name: intervals.flatten(values) for name, values in (baselines or {}).items()}
    if not metrics:
        raise ValueError("finish: no metrics to record")
    bad = {name: value for name, value in metrics.items() if not _finite(value)}
    if bad:
        raise FloatingPointError(f"non-finite metrics, nothing recorded: {bad}")
    settings = run.settings
    record = {
        "recipe": run.recipe,
        "config": run.config,
        "command": run.command,
        "metrics": metrics,
        "tolerances": tolerances or {},
        "baselines": baselines,
        "references": references or [],
        "tables": tables or {},
        "dataset": dataset,
        "history": history(run),
        "models": run.models,
        "flags": settings.flags,
        "seed": settings.seed,
        "strategy": {"name": settings.strategy, "replicas": run.num_replicas},
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
    results.write(record, run.path("results.json"))
    if settings.publish and run.is_chief:
        target = results.published_path(run.recipe, run.config)
        target.parent.mkdir(parents=True, exist_ok=True)
        for artifact in map(Path, artifacts):
            shutil.copy(artifact, target.parent / f"{run.config}-{artifact.name}")
        results.write(record, target)
        print(f"[{run.recipe}] published {target}", flush=True)
    print_summary(record)
    return record


def history(run: Run) -> list[dict]:
    """Per-epoch metrics of the run so far (metrics.jsonl), each (network, epoch) once:
    an epoch logged again after a resume replaces the earlier line."""
    path = run.model_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = {}
    for text in path.read_text().splitlines():
        if text.strip():
            line = json.loads(text)
            lines[(line.get("model", ""), line["epoch"])] = line
    return list(lines.values())


def _finite(value) -> bool:
    try:
        return bool(tf.math.is_finite(float(value)))
    except (TypeError, ValueError):
        return True


def print_summary(record: dict) -> None:
    """Prints the metrics beside the baselines, with intervals where recorded."""
    metrics = record["metrics"]
    baselines = record.get("baselines", {})
    names = [name for name in metrics if not name.endswith(("_ci_low", "_ci_high"))]
    width = max(len(name) for name in names) + 2
    print(f"\n[{record['recipe']}] results of config {record['config']}: {record['command']}")
    print(f"{'metric':<{width}}{'this run':>28}" + "".join(f"{b[:26]:>28}" for b in baselines))
    for name in names:
        row = f"{name:<{width}}{intervals.show(intervals.from_record(metrics, name)):>28}"
        row += "".join(f"{intervals.show(intervals.from_record(values, name)):>28}"
                       for values in baselines.values())
        print(row)
    for reference in record.get("references", []):
        print(f"  reference: {reference['name']} {reference.get('metric', '')} = "
              f"{reference['value']} ({reference['source']})")
    timing_info = record.get("timing", {})
    if "examples_per_second" in timing_info:
        print(f"  timing: median step {timing_info['median_step_seconds'] * 1000:.1f} ms, "
              f"{timing_info['examples_per_second']:.0f} examples/s, "
              f"wall {timing_info['wall_seconds']:.1f} s")
    print(flush=True)


HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")


def cli(train: Callable[[], dict], smoke: dict | None = None) -> None:
    """Runs a recipe's `train()` as a command: absl parses the flags first.

    `smoke` holds the flag values `--smoke` uses (see `flags.apply_smoke`). `--help`
    prints the recipe's and the shared flags and exits 0. Bad input (ValueError, a
    missing file, a non-finite result) prints one line that names the problem and exits
    with status 2; a rerun of a finished run says so and exits 0; Ctrl-C exits 130.
    """
    if any(arg in HELP_ARGS for arg in sys.argv[1:]):
        print(common_flags.help_text(sys.argv[0]))
        sys.exit(0)

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        verbose = any(arg.startswith(("--verbosity", "-v")) for arg in sys.argv[1:])
        if not verbose:
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown progress
        # TensorFlow's logger has its own handler: propagating to absl's would print twice.
        tf.get_logger().propagate = False
        try:
            common_flags.apply_smoke(smoke or {}, sys.argv[1:])
            train()
        except AlreadyFinished as finished:
            print(f"{finished}", flush=True)
        except (ValueError, OSError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume", file=sys.stderr,
                  flush=True)
            sys.exit(130)
        finally:
            rundir.release_locks()

    app.run(main)
