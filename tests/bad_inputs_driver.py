"""Runs many commands of one recipe in one process (TensorFlow imports once), as
`train.py` would run each: absl's flag parse, then `common.cli.run`. Used by the
`bad_inputs` fixture of conftest.py; prints one JSON line per command.

    python tests/bad_inputs_driver.py RECIPE CASES.json RUNS_DIR
"""

import contextlib
import importlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

# The repository first: tests/ (this script's folder, sys.path[0]) has its own `common`.
sys.path[0] = str(Path(__file__).resolve().parents[1])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
from absl import flags, logging

from common import cli
from common import flags as common_flags


def main(recipe: str, cases_file: str, runs_dir: str) -> None:
    module = importlib.import_module(f"recipes.{recipe}.train")
    logging.set_verbosity(logging.ERROR)
    cases = json.loads(Path(cases_file).read_text())
    for name, argv in cases.items():
        model_dir = Path(runs_dir) / name
        argv = [*argv, f"--model_dir={model_dir}"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                common_flags.parse(argv)
            except flags.Error as error:  # app.run prints this line and exits 1
                status = 1
                print(f"FATAL Flags parsing error: {error}", file=sys.stderr)
            else:
                try:
                    status = cli.run(module.train, module.SMOKE, argv)
                except BaseException:  # noqa: BLE001  (a traceback is what is tested for)
                    status = "traceback"
                    traceback.print_exc()
        written = sorted(str(path.relative_to(model_dir))
                         for path in model_dir.rglob("*")) if model_dir.exists() else []
        print(json.dumps({"name": name, "status": status, "stderr": err.getvalue(),
                          "stdout": out.getvalue()[-2000:], "written": written}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
