"""The flags every recipe shares, with validators.

Importing this module defines them on absl's global `FLAGS`. A recipe adds its own
flags next to its `train.py`, changes shared defaults with `set_defaults`, and parses
with absl's `app.run` (command line) or `parse` (tests). A bad value stops the parse
with a message that names the flag, and `app.run` exits non-zero without a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys

from absl import flags

FLAGS = flags.FLAGS

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")

flags.DEFINE_integer("epochs", 10, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer(
    "global_batch_size", 256, "Examples per step summed over all replicas.", lower_bound=1
)
flags.DEFINE_float("learning_rate", 1e-3, "Optimizer learning rate.")
# From 1: TensorFlow reads a global seed of 0 with a per-epoch shuffle seed of 0 as "no
# seed" and fails on the symbolic seed of the training stream.
flags.DEFINE_integer("seed", 42, "Seed for data splits, initialisation and shuffling.",
                     lower_bound=1)
flags.DEFINE_enum("strategy", "auto", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_integer(
    "num_cpu_devices",
    1,
    "Split the CPU into this many logical devices (for --strategy=mirrored without GPUs).",
    lower_bound=1,
)
flags.DEFINE_string(
    "model_dir",
    None,
    "Run directory for checkpoints, logs and results.json. "
    "Default: runs/<recipe>/<config>/<timestamp>. Pass an existing one to resume.",
)
flags.DEFINE_bool("publish", False, "Also write the record to results/<recipe>/<config>.json.")
flags.DEFINE_bool("smoke", False, "Tiny data and a few steps: checks the whole path in seconds.")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_bool(
    "mixed_precision",
    False,
    "Compute in float16 on GPU (bfloat16 on CPU) with float32 weights; losses stay float32.",
)
flags.DEFINE_string("dataset", None, "Which data to train on; each recipe lists its options.")
flags.DEFINE_string("data_dir", None, "Directory where datasets are read or cached.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Start over in --model_dir even if it holds a finished run or another configuration's.",
)
flags.DEFINE_float(
    "backup_seconds",
    30.0,
    "Back up training at an epoch's end when this many seconds have passed since the "
    "last backup (0 = after every epoch): a killed run resumes from there.",
    lower_bound=0.0,
)
flags.DEFINE_integer(
    "simulate_crash_at_step",
    0,
    "Testing aid: raise after this many training steps (0 = never), to check that a "
    "restarted run resumes from its backup.",
    lower_bound=0,
)



def _bounds_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def check_range(name: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False,
                optional: bool = False) -> None:
    """Registers a validator: `--name` is a finite number within the bounds.

    `optional` lets the flag stay unset (None). inf and nan are refused whatever the
    bounds, so a typo such as `--learning_rate=1e30` or `inf` stops at the parse.
    """
    def valid(value) -> bool:
        if value is None:
            return optional
        if not math.isfinite(value):
            return False
        if low is not None and (value < low or (low_open and value == low)):
            return False
        return high is None or not (value > high or (high_open and value == high))

    flags.register_validator(
        name, valid,
        message=f"--{name} must be a finite number {_bounds_text(low, high, low_open, high_open)}")


def check_widths(name: str, allow_empty: bool = False) -> None:
    """Registers a validator for a list flag of layer widths: positive integers, e.g.
    64,16 (`allow_empty`: an empty list means no hidden layer, and is asked for)."""
    def valid(units) -> bool:
        if not units:
            return allow_empty
        return all(unit.strip().isdigit() and int(unit) > 0 for unit in units)

    empty = " (or empty for none)" if allow_empty else ""
    flags.register_validator(
        name, valid, message=f"--{name} must be positive integers, e.g. 64,16{empty}")


check_range("learning_rate", 0.0, 10.0, low_open=True)
check_range("backup_seconds", 0.0)
flags.register_validator(
    "data_dir",
    lambda value: value is None or os.path.isdir(value),
    message="--data_dir must be an existing directory",
)


def set_defaults(**defaults) -> None:
    """Changes shared flag defaults for one recipe, e.g. `set_defaults(epochs=5)`."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)


def parse(argv: list[str]) -> list[str]:
    """Parses `argv` (without the program name) as the command line would.

    Every flag first goes back to its default, so consecutive calls in one process
    (tests) do not leak values. Raises `flags.Error` on a bad value.
    """
    FLAGS.unparse_flags()
    return FLAGS(["train.py", *argv])


# Flags that say where or how a run executes, not what it computes: a run directory may
# be resumed with other values of these (BackupAndRestore restores across strategies).
NOT_CONFIGURATION = frozenset({
    "model_dir", "publish", "overwrite", "strategy", "num_cpu_devices", "data_dir",
    "backup_seconds", "simulate_crash_at_step",
})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The shared flags' resolved values, handed to `common.training` as one argument."""

    epochs: int
    global_batch_size: int
    learning_rate: float
    seed: int
    strategy: str
    num_cpu_devices: int
    model_dir: str | None
    publish: bool
    overwrite: bool
    smoke: bool
    jit_compile: bool
    mixed_precision: bool
    dataset: str | None
    data_dir: str | None
    backup_seconds: float
    simulate_crash_at_step: int
    config: str
    command: str
    flags: dict

    @property
    def configuration(self) -> dict:
        """The flags that change what a run computes (what its directory belongs to)."""
        return {name: value for name, value in self.flags.items()
                if name not in NOT_CONFIGURATION}


def settings(argv: list[str] | None = None) -> Settings:
    """The shared flags of the parsed command line (`argv` without the program name)."""
    args = sys.argv[1:] if argv is None else argv
    shared = {field.name: FLAGS[field.name].value for field in dataclasses.fields(Settings)
              if field.name not in ("config", "command", "flags")}
    program = sys.argv[0] if argv is None else "train.py"
    return Settings(**shared, config=config_name(args),
                    command=shlex.join(["python", _relative(program), *args]),
                    flags=values())


def _relative(program: str) -> str:
    """`program` relative to the repository (recipes/<name>/train.py) when inside it."""
    from common.results import REPOSITORY

    path = os.path.abspath(program)
    inside = os.path.commonpath([path, str(REPOSITORY)]) == str(REPOSITORY)
    return os.path.relpath(path, REPOSITORY) if inside else program


def given_on_command_line(name: str, argv: list[str]) -> bool:
    """Whether `--name` (or `--noname`) is written in `argv` itself, not in a flagfile."""
    prefixes = (f"--{name}=", f"-{name}=")
    exact = {f"--{name}", f"-{name}", f"--no{name}", f"-no{name}"}
    return any(arg in exact or arg.startswith(prefixes) for arg in argv)


def apply_smoke(smoke: dict, argv: list[str]) -> None:
    """With --smoke, sets each flag of `smoke` to its smoke value (tiny data, few steps),
    unless the command line itself sets it. Runs after parsing and before `train()`, so
    the run's flags.json and record hold the values the run used."""
    if not FLAGS.smoke:
        return
    for name, value in smoke.items():
        if name not in FLAGS:
            raise ValueError(f"smoke setting for unknown flag --{name}")
        if not given_on_command_line(name, argv):
            FLAGS[name].value = value


def help_text(main_module: str) -> str:
    """The recipe's own flags, then the shared ones: what `--help` prints."""
    sections = [("flags of this recipe", main_module), ("shared flags (common/flags.py)",
                                                        __name__)]
    text = []
    for title, module in sections:
        module_flags = sorted(FLAGS.flags_by_module_dict().get(module, []),
                              key=lambda flag: flag.name)
        if not module_flags:
            continue
        text.append(f"{title}:")
        for flag in module_flags:
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            text.append(f"  --{flag.name}: {flag.help}{default}")
        text.append("")
    text.append("Presets: --flagfile=recipes/<recipe>/configs/<name>.cfg; "
                "--helpfull lists absl's and TensorFlow's flags too.")
    return "\n".join(text)


def config_name(argv: list[str] | None = None) -> str:
    """The preset a run uses: the basename of its last `--flagfile`, else "default"."""
    name = "default"
    args = sys.argv[1:] if argv is None else argv
    for index, arg in enumerate(args):
        if arg.startswith("--flagfile="):
            name = arg.split("=", 1)[1]
        elif arg == "--flagfile" and index + 1 < len(args):
            name = args[index + 1]
    return os.path.splitext(os.path.basename(name))[0] or "default"


def values() -> dict:
    """Every flag the project defines, with its resolved value (for the run record)."""
    result = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module.startswith(("absl", "tensorflow")):
            continue
        for flag in module_flags:
            result[flag.name] = flag.value
    return dict(sorted(result.items()))
