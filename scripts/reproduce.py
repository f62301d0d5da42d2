"""Re-runs published configs and checks each metric against the published record.

    python scripts/reproduce.py                    # every published record
    python scripts/reproduce.py ranking            # one recipe's records
    python scripts/reproduce.py ranking/default    # one record

Each record's own command is re-run (without --publish, into a temporary run
directory); every metric that the record gives a tolerance must land within it.
Prints a table; exits 1 if any metric misses, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from common import results

REPOSITORY = results.REPOSITORY


def select(targets: list[str]) -> list[Path]:
    if not targets:
        return results.published()
    paths = []
    for target in targets:
        recipe, _, config = target.partition("/")
        found = ([results.published_path(recipe, config)] if config
                 else results.published(recipe))
        found = [path for path in found if path.exists()]
        if not found:
            raise SystemExit(f"error: no published record for {target!r} under results/")
        paths += found
    return paths


RECIPE_NAME = re.compile(r"[a-z][a-z0-9_]*")
FLAG_ARG = re.compile(r"--(no)?([a-z][a-z0-9_]*)(=.*)?", re.DOTALL)
# Where the rerun writes is this script's choice, never the record's.
DROPPED = {"publish", "model_dir", "overwrite"}


def recipe_script(recipe) -> Path:
    """recipes/<recipe>/train.py, if `recipe` names a recipe folder of this repository."""
    folder = REPOSITORY / "recipes"
    names = sorted(path.parent.name for path in folder.glob("*/train.py"))
    if not isinstance(recipe, str) or not RECIPE_NAME.fullmatch(recipe) or recipe not in names:
        raise ValueError(f"record names recipe {recipe!r}, which is not one of recipes/ "
                         f"({', '.join(names)})")
    return folder / recipe / "train.py"


@functools.cache
def recipe_flags(script: Path) -> set[str]:
    """The flags the recipe defines (its own and the shared ones): its Config's fields."""
    config_class = importlib.import_module(f"recipes.{script.parent.name}.config").Config
    return {field.name for field in dataclasses.fields(config_class)
            if field.metadata.get("flag", True)}


def safe_arguments(record: dict, script: Path, known: set[str]) -> list[str]:
    """The record's command-line arguments, each a flag the recipe defines (a flagfile
    only from the recipe's own configs/); ValueError on anything else."""
    words = shlex.split(record["command"])
    if words[1:2] != [str(script.relative_to(REPOSITORY))]:
        raise ValueError(f"record's command {record['command']!r} does not run {script.name} "
                         f"of recipes/{record['recipe']}")
    args = []
    for arg in words[2:]:
        match = FLAG_ARG.fullmatch(arg)
        if not match:
            raise ValueError(f"record's argument {arg!r} is not a --flag=value")
        name, value = match.group(2), (match.group(3) or "=")[1:]
        if name == "flagfile":
            configs = (script.parent / "configs").resolve()
            if not (REPOSITORY / value).resolve().is_relative_to(configs):
                raise ValueError(f"record's --flagfile={value} is not under "
                                 f"recipes/{record['recipe']}/configs/")
        elif name not in known:
            raise ValueError(f"record's argument {arg!r}: recipe {record['recipe']} "
                             "defines no such flag")
        if name not in DROPPED:
            args.append(arg)
    return args


def rerun(record: dict, model_dir: Path) -> dict:
    """Runs the record's command again; returns the new results.json."""
    script = recipe_script(record.get("recipe"))
    args = safe_arguments(record, script, recipe_flags(script))
    command = [sys.executable, str(script), *args, f"--model_dir={model_dir}"]
    print("$", " ".join(command[1:]), flush=True)
    completed = subprocess.run(command, cwd=REPOSITORY)
    if completed.returncode != 0:
        raise RuntimeError(f"exit status {completed.returncode}")
    return results.load(model_dir / "results.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="recipe or recipe/config")
    paths = select(parser.parse_args(argv).targets)
    misses = 0
    rows = []
    for path in paths:
        published = results.load(path)
        name = f"{published['recipe']}/{published['config']}"
        with tempfile.TemporaryDirectory() as model_dir:
            try:
                fresh = rerun(published, Path(model_dir))
            except (RuntimeError, ValueError) as error:
                rows.append((name, "(run failed)", "", "", "", f"MISS: {error}"))
                misses += 1
                continue
        for row in results.compare(fresh, published):
            misses += not row["ok"]
            rows.append((name, row["metric"], row["published"], row["reproduced"],
                         row["tolerance"], "ok" if row["ok"] else "MISS"))
    print(f"\n{'record':<36}{'metric':<32}{'published':>12}{'reproduced':>12}"
          f"{'tolerance':>11}  verdict")
    for name, metric, expected, got, tolerance, verdict in rows:
        show = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
        print(f"{name:<36}{metric:<32}{show(expected):>12}{show(got):>12}"
              f"{show(tolerance):>11}  {verdict}")
    print(f"\n{len(rows) - misses} within tolerance, {misses} missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
