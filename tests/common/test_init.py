"""`import common` selects Keras 2 (tf-keras), and fails clearly when it is too late to."""

import json
import os
import re
import subprocess
import sys

import common  # noqa: F401

import tensorflow as tf
import tf_keras

from tests.common import REPOSITORY, FreshProcess

# TensorFlow imported first and tf.keras touched: Keras 3 is now tf.keras for good.
# TF_USE_LEGACY_KERAS is removed from the child's environment (this process has it:
# `common` set it), otherwise the child would get Keras 2 without `common`'s help.
_KERAS_3_FIRST = FreshProcess(
    """
import json, sys
import tensorflow as tf
keras_module = tf.keras.__name__
try:
    import common
except ImportError as error:
    outcome = {"error": str(error), "type": type(error).__name__}
else:
    outcome = {"error": None}
outcome.update(keras=keras_module, common_in_modules="common" in sys.modules)
print(json.dumps(outcome))
""",
    unset=("TF_USE_LEGACY_KERAS",),
)


def test_import_common_after_keras_3_fails_and_says_to_import_common_first():
    completed = _KERAS_3_FIRST.result()
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    # The scenario really happened: the child's tf.keras was Keras 3.
    assert not outcome["keras"].startswith("tf_keras"), outcome
    assert outcome["error"] is not None, "import common succeeded under Keras 3"
    assert outcome["type"] == "ImportError"
    assert re.search(r"import `?common`? first", outcome["error"]), outcome["error"]
    assert "Keras 3" in outcome["error"]
    assert not outcome["common_in_modules"]  # no half-initialised module left behind


def test_import_common_then_tensorflow_gives_tf_keras():
    # This process imported `common` before TensorFlow (tests/conftest.py).
    assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
    assert tf.keras.layers.Dense is tf_keras.layers.Dense
    assert tf.keras.Model is tf_keras.Model


def test_import_common_imports_tensorflow_quietly_with_keras_2():
    # Every entry point imports common first; it imports TensorFlow with Keras 2 selected
    # and its C++ start-up lines (CUDA probing, abseil's pre-init notice) hidden.
    completed = subprocess.run(
        [sys.executable, "-c",
         "import sys, common; import tensorflow as tf; print(tf.keras.__name__)"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
        env={key: value for key, value in os.environ.items()
             if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().startswith("tf_keras")
    assert completed.stderr.strip() == "", completed.stderr
