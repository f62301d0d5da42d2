"""The shared run: start, fit with the standard callbacks, save the model, finish.

A recipe's `train` calls these in order, each with its inputs as arguments:

    run = training.start(RECIPE, config)       # config: the recipe's frozen Config
    examples = data.load(...)                      # validated: nothing is written yet
    with run.strategy.scope():
        network = model.build(...)
        network.compile(optimizer=..., loss=...)
    training.fit(run, network, examples, epochs=epochs)
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
import shutil
import time
from pathlib import Path
from typing import Callable

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import callbacks as callbacks_
from common import distribute, intervals, results, rundir, timing
from common.config import Shared
from common.rundir import AlreadyFinished  # noqa: F401  (part of this module's interface)
from common.stream import training_stream

import tensorflow as tf

BACKUP_SUBDIR = "backup"
NETWORKS_SUBDIR = "networks"


@dataclasses.dataclass
class Run:
    """One training run: where it writes, how it distributes, what it was asked."""

    recipe: str
    settings: Shared
    model_dir: Path
    strategy: tf.distribute.Strategy
    is_chief: bool
    started: float
    timer: timing.StepTimer | None = None
    models: dict = dataclasses.field(default_factory=dict)
    opened: bool = False

    @property
    def config(self) -> str:
        return self.settings.preset

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

    def open(self) -> None:
        """Creates (and locks) the run directory if need be: with --overwrite, the old
        run's files go now, after the inputs were checked and before anything is read
        back from the directory."""
        if not self.opened:
            if self.settings.publish and self.is_chief:
                results.check_publishable()  # before anything is written or trained
            rundir.open_directory(self.model_dir, self.recipe, self.settings)
            self.opened = True

    def path(self, name: str) -> Path:
        """`name` inside the run directory, which this opens if need be."""
        self.open()
        return rundir.inside(self.model_dir, name)


def start(recipe: str, settings: Shared) -> Run:
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

    given = Path(settings.model_dir or rundir.default_directory(recipe, settings.preset))
    model_dir = given.resolve()
    chief = distribute.is_chief(strategy)
    if not chief:
        # Other workers write their checkpoints and logs beside the chief's, never over them.
        model_dir = model_dir / f"worker-{strategy.cluster_resolver.task_id}"
    rundir.check_directory(model_dir, settings, recipe, given)
    run = Run(recipe=recipe, settings=settings, model_dir=model_dir, strategy=strategy,
              is_chief=chief, started=time.time())
    print(f"[{recipe}] config={settings.preset} strategy={settings.strategy} "
          f"replicas={run.num_replicas} run directory={model_dir}", flush=True)
    return run


def _backup_dir(run: Run, name: str) -> Path:
    return run.model_dir / BACKUP_SUBDIR / (name or "model")


def saved_epoch(run: Run, name: str = "") -> int:
    """The number of epochs the backup of network `name` holds (0 without a backup)."""
    backup = _backup_dir(run, name)
    try:
        checkpoint = tf.train.latest_checkpoint(str(backup / "chief"))
        if not checkpoint:
            return 0
        reader = tf.train.load_checkpoint(checkpoint)
        epoch = 0
        for variable in reader.get_variable_to_shape_map():
            # Every tensor is read: a truncated or garbage backup fails here, in one
            # line, not later in BackupAndRestore's restore with a traceback.
            value = reader.get_tensor(variable)
            if variable.startswith("ckpt_saved_epoch"):
                epoch = int(value) + 1
    except (tf.errors.OpError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise ValueError(f"the backup in {backup} is unreadable ({_first_line(error)}): "
                         f"delete {backup} to train {name or 'the model'} from its start, "
                         "or pass --overwrite to start the run over") from None
    return epoch


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


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
    """`model.fit` with timing, TensorBoard, backups, TerminateOnNaN and a JSON log.

    `examples` (unbatched, finite) are streamed by `training_stream`; a recipe with its
    own batching passes `stream(first_epoch) -> (endless batched dataset, steps)`, whose
    epoch e must depend only on (seed, e). The backup is taken at an epoch's end (an
    integer `save_freq` would resume at the saved step with a restarted data iterator,
    silently training on the wrong batches), at most once per `--backup_seconds`. A run
    that trains several networks gives each a distinct `name`: its own backup, its own
    tag in metrics.jsonl, and, once trained, its weights under networks/<name>, so a
    rerun of a killed run loads it instead of training it again (and returns None).
    """
    if (examples is None) == (stream is None):
        raise ValueError("fit: pass either `examples` or `stream`")
    run.open()  # an overwritten run's backups and weights are gone before they are read
    weights = _network_dir(run, name) / "weights"  # a TF checkpoint prefix
    trained = weights.with_name("weights.index").exists()
    first_epoch = 0 if trained else saved_epoch(run, name)
    if stream is None:
        def stream(first):
            return training_stream(examples, global_batch_size=run.global_batch_size,
                                   seed=run.seed, first_epoch=first,
                                   shuffle_buffer=shuffle_buffer)
    train_data, steps = stream(first_epoch)
    if not model.built:  # BackupAndRestore and load_weights need built variables
        sample = train_data if examples is None else examples.batch(1)  # no shuffle buffer
        with run.strategy.scope():
            model(next(iter(sample))[0])
    if trained:
        try:
            model.load_weights(str(weights)).expect_partial()
        except (tf.errors.OpError, ValueError, IndexError) as error:
            raise ValueError(f"the trained weights {weights} are unreadable "
                             f"({_first_line(error)}): delete {weights.parent} to train "
                             f"{name or 'the model'} again, or pass --overwrite to start "
                             "the run over") from None
        print(f"[{run.recipe}] {name or 'the model'} already trained: loaded", flush=True)
        return None
    if first_epoch:
        print(f"[{run.recipe}] resuming {name or 'the model'} after epoch {first_epoch}",
              flush=True)
    run.timer = timing.StepTimer(run.global_batch_size)
    standard = [
        run.timer,
        tf.keras.callbacks.TerminateOnNaN(),
        callbacks_.IntervalBackup(str(_backup_dir(run, name)), run.settings.backup_seconds),
        callbacks_.EpochTensorBoard(str(run.path("tensorboard") / (name or "model"))),
        callbacks_.EpochLog(run.recipe, run.path("metrics.jsonl"), epochs, name),
    ]
    if run.settings.simulate_crash_at_step:
        standard.append(callbacks_.CrashAt(run.settings.simulate_crash_at_step))
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
        raise FloatingPointError(
            f"{name or 'the model'}'s training loss became non-finite in epoch "
            f"{len(history.history['loss'])}: check the learning rate, the loss weights and "
            f"the data for extreme values; {run.model_dir} can be resumed or overwritten")
    model.save_weights(str(weights))
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
    headline: str | None = None,
    model: tf.keras.Model | None = None,
    tolerances: dict | None = None,
    baselines: dict | None = None,
    references: list | None = None,
    tables: dict | None = None,
    artifacts: list | tuple = (),
    extra: dict | None = None,
) -> dict:
    """Writes `results.json` in the run directory (and publishes it with --publish).

    `headline` names the metric that leads the record (tables, README): the first of
    `metrics` if not given. Values in `metrics` and in each baseline may be
    `intervals.Interval`s: they are
    written as `name`, `name_ci_low`, `name_ci_high`. `artifacts` are files in the run
    directory (plots) published beside the record; models are never published.
    """
    metrics = intervals.flatten(metrics)
    baselines = {name: intervals.flatten(values) for name, values in (baselines or {}).items()}
    if not metrics:
        raise ValueError("finish: no metrics to record")
    headline = headline or next(iter(metrics))
    if headline not in metrics:
        raise ValueError(f"finish: the headline metric {headline!r} is not among the metrics")
    bad = {name: value for name, value in metrics.items() if not results.finite(value)}
    if bad:
        raise FloatingPointError(f"non-finite metrics, nothing recorded: {bad}")
    settings = run.settings
    record = {
        "recipe": run.recipe,
        "config": run.config,
        "command": run.command,
        "headline": headline,
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
    results.print_summary(record)
    return record


def history(run: Run) -> list[dict]:
    """Per-epoch metrics of the run so far, each (network, epoch) once."""
    return callbacks_.read_log(run.model_dir / "metrics.jsonl")
