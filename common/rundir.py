"""A run directory belongs to one configuration and one live run.

`run.json` holds the configuration (the resolved flags that change the result, see
`config.NOT_CONFIGURATION`) and its fingerprint, written when the directory is created.
A rerun of the same configuration resumes; a finished run (`results.json`) is not
redone; another configuration is refused with the flags that differ. `lock` holds the
live run's host and process id: a second run refuses to start, and the lock of a killed
run (its process gone) is taken over.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from pathlib import Path

from common import results
from common.config import Shared

RUN_FILE = "run.json"
LOCK_FILE = "lock"
LOG_FILE = "metrics.jsonl"
_held: list[Path] = []


class AlreadyFinished(Exception):
    """The run directory holds this configuration's finished run."""


def default_directory(recipe: str, config: str) -> Path:
    """runs/<recipe>/<config>/<date-time>-<process id>: unique for runs started in the same
    second, in one process or several."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / recipe / config / f"{stamp}-{os.getpid()}"
    path, count = base, 1
    while path.exists():
        count += 1
        path = base.with_name(f"{base.name}-{count}")
    return path


def _read_run_file(model_dir: Path) -> dict:
    """run.json, or ValueError naming it and what to do."""
    run_file = model_dir / RUN_FILE
    try:
        saved = json.loads(run_file.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("configuration"), dict):
            raise ValueError("no configuration in it")
    except (OSError, ValueError) as error:
        raise ValueError(f"{run_file} is unreadable ({error}): this run cannot be resumed; "
                         "pass --overwrite to start over there, or choose another "
                         "--model_dir") from None
    return saved


def _symlinks(model_dir: Path) -> list[Path]:
    """The symbolic links inside `model_dir` (a planted link would send the run's writes
    outside it)."""
    found = []
    for root, directories, files in os.walk(model_dir):
        found += [Path(root) / name for name in directories + files
                  if (Path(root) / name).is_symlink()]
    return found


def _check_overwrite(model_dir: Path, given: Path, recipe: str) -> None:
    """--overwrite deletes only a run directory of this recipe, never the working
    directory (or one that holds it), nor what a symbolic link points to."""
    if given.is_symlink():
        raise ValueError(f"--model_dir={given} is a symbolic link: --overwrite deletes only "
                         "a real run directory, never a link's target")
    cwd = Path.cwd().resolve()
    if cwd == model_dir or model_dir in cwd.parents or model_dir == Path.home().resolve():
        raise ValueError(f"--model_dir={given} is the working directory, your home or one "
                         "of their parents: --overwrite will not delete it")
    if not model_dir.exists() or not any(model_dir.iterdir()):
        return
    if not (model_dir / RUN_FILE).is_file():
        raise ValueError(f"--model_dir={given} holds files but no {RUN_FILE}: not a run "
                         "directory of this project, and --overwrite deletes only those. "
                         "Choose another --model_dir")
    try:
        owner = json.loads((model_dir / RUN_FILE).read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return  # an unreadable run.json of a run directory: starting over is the remedy
    if owner != recipe:
        raise ValueError(f"--model_dir={given} is a run directory of {owner!r}, not of "
                         f"{recipe!r}: --overwrite will not delete it")


def _live_lock(model_dir: Path) -> dict | None:
    """The lock's owner, if that process still runs (on this host)."""
    try:
        owner = json.loads((model_dir / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    if owner.get("host") != socket.gethostname():
        return owner  # cannot see another host's processes: assume it is alive
    if owner.get("pid") == os.getpid():
        return None  # this process's own (an earlier run in the same process)
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return None
    except (PermissionError, KeyError, ValueError, TypeError):
        return owner
    return owner


def _differences(saved: dict, wanted: dict) -> list[str]:
    names = sorted(set(saved) | set(wanted))
    return [f"--{name}={saved.get(name)!r} there, {wanted.get(name)!r} now"
            for name in names if saved.get(name) != wanted.get(name)]


def check_directory(model_dir: Path, settings: Shared, recipe: str,
                    given: Path | None = None) -> None:
    """Before anything is loaded or written: may this run use `model_dir` (resolved;
    `given` is the path as the user wrote it)? Deletes nothing: with --overwrite the
    directory is emptied at the run's first write (`open_directory`), after its inputs
    have been checked."""
    given = given or model_dir
    if not model_dir.exists():
        if settings.overwrite:
            _check_overwrite(model_dir, given, recipe)
        return
    if model_dir.is_file():
        raise ValueError(f"--model_dir={given} is a file")
    owner = _live_lock(model_dir)
    if owner:
        raise ValueError(f"--model_dir={given} is in use by another run (process "
                         f"{owner.get('pid')} on {owner.get('host')}); wait for it or "
                         "choose another --model_dir")
    if settings.overwrite:
        _check_overwrite(model_dir, given, recipe)
        return
    links = _symlinks(model_dir)
    if links:
        raise ValueError(f"--model_dir={given} holds a symbolic link ({links[0]}): a run "
                         "writes only inside its directory; remove the link, or choose "
                         "another --model_dir")
    run_file = model_dir / RUN_FILE
    if not run_file.exists():
        if any(path.name != LOCK_FILE for path in model_dir.iterdir()):
            raise ValueError(f"--model_dir={given} holds files but no {RUN_FILE}: not a run "
                             "directory of this project; choose another --model_dir")
        return
    saved = _read_run_file(model_dir)
    wanted = {"recipe": recipe, **settings.configuration}
    differ = _differences({"recipe": saved.get("recipe"), **saved["configuration"]}, wanted)
    if differ:
        shown = "; ".join(differ[:6]) + ("; ..." if len(differ) > 6 else "")
        raise ValueError(f"--model_dir={given} belongs to another configuration "
                         f"({shown}): nothing trained. Choose another --model_dir, or "
                         "pass --overwrite to start over there")
    if (model_dir / "results.json").exists():
        raise AlreadyFinished(f"[{saved.get('recipe')}] {model_dir} already holds this "
                              "configuration's finished run (results.json); nothing to do. "
                              "Pass --overwrite to train it again")


def open_directory(model_dir: Path, recipe: str, settings: Shared) -> None:
    """Creates (or reopens) `model_dir`, takes its lock, writes run.json and flags.json.

    With --overwrite, a directory that `check_directory` allowed is emptied first (a run
    opens its directory once). A metrics log whose last line a kill cut short loses that part line.
    """
    if settings.overwrite and model_dir.exists():
        _check_overwrite(model_dir, model_dir, recipe)
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    _repair_log(model_dir / LOG_FILE)
    lock = model_dir / LOCK_FILE
    if lock.exists() and not _live_lock(model_dir):
        lock.unlink()  # a killed run's lock
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise ValueError(f"--model_dir={model_dir} is in use by another run") from None
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
    _held.append(lock)
    configuration = settings.configuration
    if not (model_dir / RUN_FILE).exists():
        results.write({"recipe": recipe, "config": settings.preset,
                       "fingerprint": results.fingerprint(json.dumps(
                           results.plain(configuration), sort_keys=True)),
                       "configuration": configuration}, model_dir / RUN_FILE)
    results.write({"command": settings.command, "flags": settings.flags},
                  model_dir / "flags.json")


def release_locks() -> None:
    """Removes the locks this process holds (at the end of a run, however it ends)."""
    while _held:
        lock = _held.pop()
        try:
            lock.unlink()
        except FileNotFoundError:
            pass


def _repair_log(path: Path) -> None:
    """Cuts a last line without its newline (a write a kill interrupted) off the log, so
    the next epoch's line starts on a line of its own."""
    if not path.is_file():
        return
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):
        path.write_bytes(text[:text.rfind(b"\n") + 1])


def inside(model_dir: Path, name: str) -> Path:
    """`model_dir / name`, refused (ValueError) if it is a symbolic link."""
    path = model_dir / name
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link: a run writes only inside its "
                         "directory; remove the link, or choose another --model_dir")
    return path
