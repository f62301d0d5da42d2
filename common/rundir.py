"""A run directory belongs to one configuration and one live run.

`run.json` holds the configuration (the resolved flags that change the result, see
`flags.NOT_CONFIGURATION`) and its fingerprint, written when the directory is created.
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
from common.flags import Settings

RUN_FILE = "run.json"
LOCK_FILE = "lock"
_held: list[Path] = []


class AlreadyFinished(Exception):
    """The run directory holds this configuration's finished run."""


def default_directory(recipe: str, config: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / recipe / config / stamp


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


def check_directory(model_dir: Path, settings: Settings) -> None:
    """Before anything is loaded or written: may this run use `model_dir`?"""
    if not model_dir.exists():
        return
    if model_dir.is_file():
        raise ValueError(f"--model_dir={model_dir} is a file")
    owner = _live_lock(model_dir)
    if owner:
        raise ValueError(f"--model_dir={model_dir} is in use by another run (process "
                         f"{owner.get('pid')} on {owner.get('host')}); wait for it or "
                         "choose another --model_dir")
    if settings.overwrite:
        shutil.rmtree(model_dir)
        return
    run_file = model_dir / RUN_FILE
    if not run_file.exists():
        if any(path.name != LOCK_FILE for path in model_dir.iterdir()):
            raise ValueError(f"--model_dir={model_dir} holds files but no {RUN_FILE}: not a "
                             "run directory of this project (use --overwrite to reuse it)")
        return
    saved = json.loads(run_file.read_text())
    wanted = {"recipe": saved.get("recipe"), **settings.configuration}
    differ = _differences({"recipe": saved.get("recipe"), **saved["configuration"]}, wanted)
    if differ:
        shown = "; ".join(differ[:6]) + ("; ..." if len(differ) > 6 else "")
        raise ValueError(f"--model_dir={model_dir} belongs to another configuration "
                         f"({shown}): nothing trained. Choose another --model_dir, or "
                         "pass --overwrite to start over there")
    if (model_dir / "results.json").exists():
        raise AlreadyFinished(f"[{saved.get('recipe')}] {model_dir} already holds this "
                              "configuration's finished run (results.json); nothing to do. "
                              "Pass --overwrite to train it again")


def open_directory(model_dir: Path, recipe: str, settings: Settings) -> None:
    """Creates (or reopens) `model_dir`, takes its lock, writes run.json and flags.json."""
    model_dir.mkdir(parents=True, exist_ok=True)
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
        results.write({"recipe": recipe, "config": settings.config,
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
