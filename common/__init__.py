"""Shared core of the recipes: losses, metrics, strategy, timing, results, the run.

Importing `common` selects Keras 2 (tf-keras) for `tf.keras`, which
tensorflow-recommenders needs. It must happen before TensorFlow is first
imported, so every entry point imports `common` first.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Quieter start-up: TensorFlow's C++ INFO lines drown the recipe's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


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


_check_keras_2()
