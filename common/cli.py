"""A recipe as a command: flags, smoke settings, --help, exit statuses, Ctrl-C."""

from __future__ import annotations

import sys
from typing import Callable

import common  # Keras 2 before TensorFlow
import tensorflow as tf
from absl import app, logging

from common import flags as common_flags
from common import rundir

def _not_slow_callback_warning(record) -> bool:
    """Drops Keras' "Callback method ... is slow compared to the batch time": the step
    timer waits for every step on purpose (real step times), which triggers it."""
    return "is slow compared to the batch time" not in record.getMessage()


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
        if not common.verbosity_asked(sys.argv[1:]):
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown progress
        # TensorFlow's logger has its own handler: propagating to absl's would print twice.
        tf.get_logger().propagate = False
        tf.get_logger().addFilter(_not_slow_callback_warning)
        try:
            common_flags.apply_smoke(smoke or {}, sys.argv[1:])
            train()
        except rundir.AlreadyFinished as finished:
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
