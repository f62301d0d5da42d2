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


def rerun(record: dict, model_dir: Path) -> dict:
    """Runs the record's command again; returns the new results.json."""
    args = [arg for arg in shlex.split(record["command"])[2:]
            if arg != "--publish" and not arg.startswith("--model_dir")]
    script = REPOSITORY / "recipes" / record["recipe"] / "train.py"
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
            except RuntimeError as error:
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
