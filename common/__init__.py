"""Shared core of the recipes: losses, metrics, strategy, timing, results, the run.

Importing `common` selects Keras 2 (tf-keras) for `tf.keras`, which
tensorflow-recommenders needs. It must happen before TensorFlow is first
imported, so every entry point imports `common` first. It also imports TensorFlow
quietly: the C++ start-up lines (CUDA probing on a CPU machine, oneDNN notices) are
hidden unless the command line asks for `--verbosity` / `-v` or the environment sets
TF_CPP_MIN_LOG_LEVEL to 0 or 1.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def verbosity_asked(argv: list[str]) -> bool:
    """Whether `argv` sets absl's `--verbosity` (or `-v`)."""
    return any(arg.startswith(("--verbosity", "-v=", "--v=")) or arg in ("-v", "--v")
               for arg in argv)


# Verbose when the command line asks for it, or the environment asks TensorFlow for its
# INFO or WARNING lines (a level of 2 or 3, e.g. the 3 set here and inherited by child
# processes, stays quiet).
_VERBOSE = (os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")
            or verbosity_asked(sys.argv[1:]))
if not _VERBOSE:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def _check_keras_2() -> None:
    """Fails clearly when TensorFlow was imported earlier with Keras 3 as `tf.keras`."""
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            f"tf.keras is {tf.keras.__name__} (Keras 3), but the recipes need Keras 2 "
            "(tf-keras). "
            "TensorFlow was imported before `common`: import `common` first, or set "
            "TF_USE_LEGACY_KERAS=1 in the environment before starting Python."
        )


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 closed to its C++ start-up lines, which
    are written before its log level is read (abseil's "before InitializeLog" lines)."""
    if "tensorflow" in sys.modules or _VERBOSE:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_check_keras_2()
_import_tensorflow_quietly()

# `common.models.load_model(path)` after a plain `import common` (the documented way to
# load a saved model).
from common import models  # noqa: E402,F401
