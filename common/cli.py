"""A recipe as a command: the absl command line made from its config class, --help,
--smoke, exit statuses, Ctrl-C and SIGTERM.

    if __name__ == "__main__":
        cli.main(Config, train)

`parse(Config, argv)` is the same parse without the process around it (tests use it):
each call defines the config's flags on a fresh `absl.flags.FlagValues`, so recipes
never touch absl's global FLAGS with their own flags and any number of them can be
imported in one process.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from typing import Callable

import common  # Keras 2 before TensorFlow
from common import rundir
from common.config import Shared, command_line, kinds

import tensorflow as tf
from absl import app, flags, logging

HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")


class FlagError(ValueError):
    """A flag value the config refuses: absl prints it as a parse error (exit 1)."""


def _not_slow_callback_warning(record) -> bool:
    """Drops Keras' "Callback method ... is slow compared to the batch time": the step
    timer waits for every step on purpose (real step times), which triggers it."""
    return "is slow compared to the batch time" not in record.getMessage()


def _define(config_class, values: flags.FlagValues) -> None:
    """Defines every flag field of `config_class` on `values`."""
    for name, kind in kinds(config_class).items():
        field = config_class.__dataclass_fields__[name]
        meta = field.metadata
        if not meta.get("flag", True):
            continue
        default, text = field.default, meta.get("help", "")
        if kind.many:
            shown = None if default is None else [str(item) for item in default]
            flags.DEFINE_list(name, shown, text, flag_values=values)
        elif kind.scalar is bool:
            flags.DEFINE_bool(name, default, text, flag_values=values)
        elif kind.scalar is int:
            flags.DEFINE_integer(name, default, text, flag_values=values)
        elif kind.scalar is float:
            flags.DEFINE_float(name, default, text, flag_values=values)
        elif meta.get("choices"):
            flags.DEFINE_enum(name, default, meta["choices"], text, flag_values=values)
        else:
            flags.DEFINE_string(name, default, text, flag_values=values)


def _flag_name(arg: str) -> str | None:
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.lstrip("-").split("=", 1)[0]
    return name


def given_on_command_line(name: str, argv: list[str]) -> bool:
    """Whether `--name` (or `--noname`) is written in `argv` itself, not in a flagfile."""
    prefixes = (f"--{name}=", f"-{name}=")
    exact = {f"--{name}", f"-{name}", f"--no{name}", f"-no{name}"}
    return any(arg in exact or arg.startswith(prefixes) for arg in argv)


def preset_name(argv: list[str]) -> str:
    """The preset a run uses: the basename of its last `--flagfile`, else "default"."""
    name = "default"
    for index, arg in enumerate(argv):
        if arg.startswith("--flagfile="):
            name = arg.split("=", 1)[1]
        elif arg == "--flagfile" and index + 1 < len(argv):
            name = argv[index + 1]
    return os.path.splitext(os.path.basename(name))[0] or "default"


def parse(config_class, argv: list[str], program: str = "train.py"):
    """The config of a command line (`argv` without the program name): flags, then
    flagfiles' values, then --smoke's (but for flags `argv` itself sets). Flags the
    config does not define go to absl's own (--verbosity, ...). Raises FlagError."""
    values = flags.FlagValues()
    _define(config_class, values)
    try:
        expanded = values.read_flags_from_files(list(argv), force_gnu=False)
    except flags.Error as error:
        raise FlagError(str(error)) from None
    own, other = [], []
    for arg in expanded:
        name = _flag_name(arg)
        mine = name is not None and (name in values or (name.startswith("no")
                                                        and name[2:] in values))
        (own if mine else other).append(arg)
    try:
        rest = values([program, *own])
        if not flags.FLAGS.is_parsed() or other:
            rest += flags.FLAGS([program, *other])[1:]
    except flags.Error as error:
        raise FlagError(str(error)) from None
    if len(rest) > 1:
        raise FlagError(f"unexpected arguments: {' '.join(rest[1:])}")
    settings = {name: values[name].value for name in config_class.flag_names()}
    try:
        config = config_class(**settings, preset=preset_name(argv),
                              command=command_line(program, argv))
        return config.smoked({name for name in settings if given_on_command_line(name, argv)})
    except ValueError as error:
        raise FlagError(str(error)) from None


def help_text(config_class) -> str:
    """The recipe's own flags, then the shared ones: what `--help` prints."""
    own = [name for name in config_class.flag_names() if name not in Shared.flag_names()]
    sections = [("flags of this recipe", own), ("shared flags (common/config.py)",
                                                  Shared.flag_names())]
    text = []
    for title, names in sections:
        if not names:
            continue
        text.append(f"{title}:")
        for name in sorted(names):
            field = config_class.__dataclass_fields__[name]
            default = field.default
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
            shown = "" if default is None else f" (default: {default})"
            choices = field.metadata.get("choices")
            among = f" One of: {', '.join(map(str, choices))}." if choices else ""
            text.append(f"  --{name}: {field.metadata.get('help', '')}{among}{shown}")
        text.append("")
    text.append("Presets: --flagfile=recipes/<recipe>/configs/<name>.cfg; "
                "--helpfull lists absl's flags too.")
    return "\n".join(text)


class Terminated(Exception):
    """SIGTERM arrived: ends the run like Ctrl-C (lock released, resumable)."""


# The signals that arrived during `run`: TensorFlow re-raises an exception raised inside
# it (a tf.data generator, a callback) as its own error type, so the handler's exception
# can reach `run` as another one.
_signalled: list[int] = []


def _on_signal(signum, frame):
    _signalled.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated()


def run(train: Callable[[Shared], dict], config: Shared) -> int:
    """Runs `train(config)`; returns the exit status, having printed one line for any
    failure it knows.

    0: trained, or the run was already finished. 2: bad input (ValueError, a missing
    file, a non-finite result), a full disk or an unreadable file of the run directory.
    130: Ctrl-C. 143: SIGTERM. Either way the run directory's lock is released.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        # Ctrl-C interrupts even where the parent started this process ignoring SIGINT
        # (a shell's background job, a test runner's worker): Python then leaves it ignored.
        previous = (signal.signal(signal.SIGTERM, _on_signal),
                    signal.signal(signal.SIGINT, _on_signal))
    _signalled.clear()
    try:
        try:
            train(config)
        except Exception:
            if _signalled:  # the signal's exception, re-raised as another one
                raise (KeyboardInterrupt() if _signalled[0] == signal.SIGINT
                       else Terminated()) from None
            raise
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
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
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


def main(config_class, train: Callable[[Shared], dict]) -> None:
    """Runs a recipe as a command: parses its flags into `config_class`, then
    `train(config)`. `--help` prints the recipe's and the shared flags and exits 0; a bad
    flag value exits 1 with absl's one line; everything else as `run` says."""
    if any(arg in HELP_ARGS for arg in sys.argv[1:]):
        print(help_text(config_class))
        sys.exit(0)

    def flags_parser(argv):
        try:
            return parse(config_class, argv[1:], argv[0])
        except FlagError as error:
            print(f"FATAL Flags parsing error: {error}\nPass --help to see help on flags.",
                  file=sys.stderr)
            sys.exit(1)

    def start(config):
        if not common.verbosity_asked(sys.argv[1:]):
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown progress
        # TensorFlow's logger has its own handler: propagating to absl's would print twice.
        tf.get_logger().propagate = False
        tf.get_logger().addFilter(_not_slow_callback_warning)
        status = run(train, config)
        if status:
            sys.exit(status)

    app.run(start, flags_parser=flags_parser)
