"""Loading a saved model without letting the file run code.

    import common
    network = common.models.load_model("runs/ranking/default/<stamp>/model.keras")

Keras' `safe_mode` refuses lambdas only in the zip `.keras` format: a file in the legacy
HDF5 format (whatever its name) goes through the old loader, which rebuilds `Lambda`
layers from their Python bytecode, so loading it can run any code. `load_model` accepts
only the zip format, with `safe_mode` on. A file you trust that is in another format:
`tf.keras.models.load_model(path, safe_mode=False)` yourself, knowing what it does.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf

KERAS_3_HELP = ("the recipes save Keras 2 (tf-keras) models: `import common` before "
                "TensorFlow, or set TF_USE_LEGACY_KERAS=1 in the environment, then load")


def check_keras_2() -> None:
    """Raises RuntimeError when `tf.keras` is Keras 3, which cannot read the recipes'
    models (it fails with "Could not locate class 'Functional'")."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(f"tf.keras is Keras 3 ({tf.keras.__name__}): {KERAS_3_HELP}")


def check_safe_file(path: str | Path, flag: str = "path") -> Path:
    """`path` as a Path if it is a zip-format `.keras` file; ValueError naming `flag`
    otherwise (missing, a directory, HDF5 or any other format)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{flag}: {path} is not a file")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{flag}: {path} is not a zip-format .keras file (HDF5 or another legacy "
            "format, whose loading can run code it carries): refused. To load a file you "
            "trust, call tf.keras.models.load_model(path, safe_mode=False) yourself")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(f"{flag}: {path} is a zip file but not a Keras model "
                             "(no config.json in it)")
    return path


def load_model(path: str | Path, *, compile: bool = False, flag: str = "path"):
    """The Keras model saved at `path` (zip `.keras` format only, Keras' safe mode on:
    no lambda or other code in the file runs). `flag` names the argument in errors."""
    check_keras_2()
    path = check_safe_file(path, flag)
    try:
        return tf.keras.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{flag}: {path} could not be loaded safely: {first}") from None
