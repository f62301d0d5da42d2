"""A recipe as a command: flags, smoke settings, --help, exit statuses, Ctrl-C."""

from __future__ import annotations

import errno
import signal
import sys
import threading
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


class Terminated(Exception):
    """SIGTERM arrived: ends the run like Ctrl-C (lock released, resumable)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run(train: Callable[[], dict], smoke: dict | None, argv: list[str]) -> int:
    """Runs `train()` on flags already parsed from `argv` (without the program name);
    returns the exit status, having printed one line for any failure it knows.

    0: trained, or the run was already finished. 2: bad input (ValueError, a missing
    file, a non-finite result), a full disk or an unreadable file of the run directory.
    130: Ctrl-C. 143: SIGTERM. Either way the run directory's lock is released.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        common_flags.apply_smoke(smoke or {}, argv)
        train()
        return 0
    except rundir.AlreadyFinished as finished:
        print(f"{finished}", flush=True)
        return 0
    except (ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr, flush=True)
        return 2
    except tf.errors.OpError as error:
        # A full disk reaches TensorFlow's file writers as one of several error types.
        if not (_disk_full(error) or isinstance(error, tf.errors.DataLossError)):
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr, flush=True)
        return 130
    except Terminated:
        print("terminated (SIGTERM); rerun the same command to resume", file=sys.stderr,
              flush=True)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        rundir.release_locks()


def _disk_full(error: Exception) -> bool:
    return (getattr(error, "errno", None) == errno.ENOSPC
            or "no space left on device" in str(error).lower())


def _one_line(error: Exception) -> str:
    """The error's first line; for a full disk, what to do about it."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if _disk_full(error):
        return (f"no space left on the disk ({first}): free some space and rerun the same "
                "command to resume")
    return first


def cli(train: Callable[[], dict], smoke: dict | None = None) -> None:
    """Runs a recipe's `train()` as a command: absl parses the flags first.

    `smoke` holds the flag values `--smoke` uses (see `flags.apply_smoke`). `--help`
    prints the recipe's and the shared flags and exits 0. A bad flag value exits 1 with
    absl's one line; everything else as `run` says.
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
        status = run(train, smoke, sys.argv[1:])
        if status:
            sys.exit(status)

    app.run(main)
