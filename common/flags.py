"""The flags every recipe shares, with validators.

Importing this module defines them on absl's global `FLAGS`. A recipe adds its own
flags next to its `train.py`, changes shared defaults with `set_defaults`, and parses
with absl's `app.run` (command line) or `parse` (tests). A bad value stops the parse
with a message that names the flag, and `app.run` exits non-zero without a traceback.
"""

from __future__ import annotations

import os
import sys

from absl import flags

FLAGS = flags.FLAGS

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")

flags.DEFINE_integer("epochs", 10, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer(
    "global_batch_size", 256, "Examples per step summed over all replicas.", lower_bound=1
)
flags.DEFINE_float("learning_rate", 1e-3, "Optimizer learning rate.")
flags.DEFINE_integer("seed", 42, "Seed for data splits, initialisation and shuffling.")
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
flags.DEFINE_integer(
    "simulate_crash_at_step",
    0,
    "Testing aid: raise after this many training steps (0 = never), to check that a "
    "restarted run resumes from its backup.",
    lower_bound=0,
)

flags.register_validator(
    "learning_rate", lambda value: value > 0, message="--learning_rate must be > 0"
)
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
