"""A recipe's settings: one frozen dataclass whose fields are the recipe's flags.

    @dataclasses.dataclass(frozen=True)
    class Config(config.Shared):
        SMOKE: ClassVar[dict] = {"epochs": 2, "num_list_per_user": 10}   # what --smoke sets
        epochs: int = config.shared("epochs", 20)          # a shared flag, its default here
        loss: str = config.setting("ranknet", "Pairwise loss.", choices=LOSSES)
        l2: float = config.setting(1e-3, "L2 penalty.", low=0.0, high=1.0)
        hidden_units: tuple[int, ...] = config.setting((64, 16), "Layer sizes.", widths=True)

A field's type (bool, int, float, str, `X | None`, `tuple[int | float | str, ...]`),
default, help and checks are all there is to a flag: `common.cli` makes the absl command
line from them (`--flagfile`, `--help`, `--smoke`), and a test builds `Config(...)` and
calls `train(config)` in its own process. Every value is checked when the object is made
(finite numbers in their bounds, a choice among `choices`, positive widths), and a
recipe's `check()` adds checks across fields: a ValueError names the flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import typing
from typing import Any, ClassVar

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")

# Settings that say where or how a run executes, not what it computes: a run directory
# may be resumed with other values of these (BackupAndRestore restores across strategies).
NOT_CONFIGURATION = frozenset({
    "model_dir", "publish", "overwrite", "strategy", "num_cpu_devices", "data_dir",
    "backup_seconds", "simulate_crash_at_step",
})


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, choices=None,
            widths: bool = False, allow_empty: bool = False, flag: bool = True):
    """A config field that is a flag: its default, its help line and its checks.

    `low` / `high` bound a number (or each number of a tuple), `*_open` makes a bound
    strict; inf and nan are always refused. `choices` lists the allowed strings (or
    tuple items). `widths`: a tuple of positive integers (layer sizes), empty only with
    `allow_empty`. `flag=False`: a field that is not on the command line.
    """
    if isinstance(default, list):
        default = tuple(default)
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open,
                "high_open": high_open, "choices": tuple(choices) if choices else None,
                "widths": widths, "allow_empty": allow_empty, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


def shared(name: str, default: Any):
    """The shared flag `name` (a field of `Shared`) with another default for one recipe."""
    field = Shared.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=field.metadata)


def _bounds(meta: dict) -> str:
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return (f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}"
                f"{')' if meta['high_open'] else ']'}")
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    return f"{'<' if meta['high_open'] else '<='} {high:g}"


def _within(value: float, meta: dict) -> bool:
    low, high = meta["low"], meta["high"]
    if not math.isfinite(value):
        return False
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        return False
    return high is None or not (value > high or (meta["high_open"] and value == high))


class Kind(typing.NamedTuple):
    """What a field's annotation says: the Python type of one value, whether the field
    is a tuple of them, and whether None is allowed."""

    scalar: type
    many: bool
    optional: bool


def kind(annotation) -> Kind:
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(arg for arg in args if arg is not type(None))
    if typing.get_origin(annotation) is tuple:
        return Kind(typing.get_args(annotation)[0], True, optional)
    return Kind(annotation, False, optional)


def kinds(cls) -> dict[str, Kind]:
    """{field name: Kind} of every field of the config class `cls`."""
    hints = typing.get_type_hints(cls)
    return {field.name: kind(hints[field.name]) for field in dataclasses.fields(cls)}


def convert(name: str, value, field_kind: Kind):
    """`value` (a Python value, or text from the command line) as the field's type;
    ValueError naming `--name`."""
    if value is None:
        return None
    scalar = field_kind.scalar

    def one(item):
        if scalar is bool:
            if isinstance(item, str):
                if item.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return item.lower() in ("true", "1")
            return bool(item)
        if scalar is int and isinstance(item, float) and not item.is_integer():
            raise ValueError
        if isinstance(item, str):
            item = item.strip()
        return scalar(item)

    try:
        if field_kind.many:
            items = value.split(",") if isinstance(value, str) else value
            items = [] if isinstance(value, str) and not value.strip() else items
            return tuple(one(item) for item in items)
        return one(value)
    except (TypeError, ValueError):
        what = f"a list of {scalar.__name__}" if field_kind.many else f"a {scalar.__name__}"
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        raise ValueError(f"--{name}={shown} is not {what}") from None


def check_value(name: str, value, meta: dict, field_kind: Kind) -> None:
    """ValueError naming `--name` if `value` breaks the field's checks."""
    if value is None:
        if field_kind.optional:
            return
        raise ValueError(f"--{name} must be set")
    items = value if field_kind.many else (value,)
    if meta.get("widths"):
        if not items and not meta["allow_empty"]:
            raise ValueError(f"--{name} must be positive integers, e.g. 64,16")
        if any(not isinstance(item, int) or item <= 0 for item in items):
            raise ValueError(f"--{name} must be positive integers, e.g. 64,16"
                             f"{' (or empty for none)' if meta['allow_empty'] else ''}")
    if meta.get("choices") is not None:
        wrong = [item for item in items if item not in meta["choices"]]
        if wrong:
            raise ValueError(f"--{name}: {wrong[0]!r} is not one of "
                             f"{', '.join(map(str, meta['choices']))}")
    if field_kind.scalar in (int, float):
        bounded = meta.get("low") is not None or meta.get("high") is not None
        for item in items:
            if not math.isfinite(item) or (bounded and not _within(item, meta)):
                bounds = f" {_bounds(meta)}" if bounded else ""
                raise ValueError(f"--{name} must be a finite number{bounds}, not {item!r}")


@dataclasses.dataclass(frozen=True)
class Shared:
    """The settings every recipe has (the shared flags); a recipe's config extends it."""

    SMOKE: ClassVar[dict] = {}

    epochs: int = setting(10, "Passes over the training data.", low=1)
    global_batch_size: int = setting(256, "Examples per step summed over all replicas.",
                                     low=1)
    learning_rate: float = setting(1e-3, "Optimizer learning rate.", low=0.0, high=10.0,
                                   low_open=True)
    # From 1: TensorFlow reads a global seed of 0 with a per-epoch shuffle seed of 0 as
    # "no seed" and fails on the symbolic seed of the training stream.
    seed: int = setting(42, "Seed for data splits, initialisation and shuffling.", low=1)
    strategy: str = setting("auto", "tf.distribute strategy.", choices=STRATEGIES)
    num_cpu_devices: int = setting(
        1, "Split the CPU into this many logical devices (for --strategy=mirrored without "
        "GPUs).", low=1, high=64)
    model_dir: str | None = setting(
        None, "Run directory for checkpoints, logs and results.json. Default: "
        "runs/<recipe>/<config>/<timestamp>-<pid>. Pass an existing one to resume.")
    publish: bool = setting(False, "Also write the record to results/<recipe>/<config>.json.")
    smoke: bool = setting(False, "Tiny data and a few steps: checks the whole path in "
                          "seconds.")
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    mixed_precision: bool = setting(
        False, "Compute in float16 on GPU (bfloat16 on CPU) with float32 weights; losses "
        "stay float32.")
    dataset: str | None = setting(None, "Which data to train on; each recipe lists its "
                                  "options.")
    data_dir: str | None = setting(None, "Directory where datasets are read or cached.")
    overwrite: bool = setting(
        False, "Start over in --model_dir if it holds a finished run or another "
        "configuration's run of this recipe.")
    backup_seconds: float = setting(
        30.0, "Back up training at an epoch's end when this many seconds have passed since "
        "the last backup (0 = after every epoch): a killed run resumes from there.",
        low=0.0)
    simulate_crash_at_step: int = setting(
        0, "Testing aid: raise after this many training steps (0 = never), to check that "
        "a restarted run resumes from its backup.", low=0)
    # Not flags: the preset's name (the last --flagfile's basename) and the command.
    preset: str = setting("default", "", flag=False)
    command: str = setting("", "", flag=False)

    def __post_init__(self):
        for name, field_kind in kinds(type(self)).items():
            meta = type(self).__dataclass_fields__[name].metadata
            if not meta.get("flag", True):
                continue
            try:
                value = convert(name, getattr(self, name), field_kind)
            except ValueError:
                if meta.get("widths"):  # "64,,16", "-3": the message says what is wanted
                    raise ValueError(f"--{name} must be positive integers, e.g. 64,16, not "
                                     f"{getattr(self, name)!r}") from None
                raise
            check_value(name, value, meta, field_kind)
            object.__setattr__(self, name, value)
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"--data_dir={self.data_dir}: not an existing directory")
        self.check()

    def check(self) -> None:
        """Checks across fields (a recipe overrides it): ValueError naming the flags."""

    @classmethod
    def flag_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)
                if field.metadata.get("flag", True)]

    @property
    def flags(self) -> dict:
        """Every flag with its value, as the record and run.json hold them (a tuple as
        the list of strings the command line gives)."""
        values = {}
        for name, field_kind in kinds(type(self)).items():
            if name not in self.flag_names():
                continue
            value = getattr(self, name)
            values[name] = ([str(item) for item in value] if field_kind.many and value
                            is not None else value)
        return dict(sorted(values.items()))

    @property
    def configuration(self) -> dict:
        """The flags that change what a run computes (what its directory belongs to)."""
        return {name: value for name, value in self.flags.items()
                if name not in NOT_CONFIGURATION}

    def smoked(self, given: typing.Iterable[str] = ()) -> Shared:
        """With --smoke, this config with the class's SMOKE values (tiny data, few steps)
        but for the flags in `given` (set on the command line itself)."""
        if not self.smoke:
            return self
        return dataclasses.replace(self, **{name: value for name, value in self.SMOKE.items()
                                            if name not in set(given)})


def command_line(program: str, argv: list[str]) -> str:
    """`python <program relative to the repository> <argv>`, as the record shows it."""
    from common.results import REPOSITORY

    path = os.path.abspath(program)
    inside = os.path.commonpath([path, str(REPOSITORY)]) == str(REPOSITORY)
    shown = os.path.relpath(path, REPOSITORY) if inside else program
    return shlex.join(["python", shown, *argv])
