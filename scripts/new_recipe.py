"""Forks a recipe: copies its folder, configs and test under a new name.

    python scripts/new_recipe.py ranking my_ranking

Creates recipes/my_ranking/ and tests/recipes/test_my_ranking.py with every reference
to the old recipe renamed (imports `recipes.ranking`, paths `recipes/ranking/`, the
recipe name in tests). The fork imports as `recipes.my_ranking` with no extra step (the
project is installed in editable mode). Published results are not copied: the fork's
README starts fresh, with its own commands, and the fork publishes its own records.

Every recipe folder has the same file set (`FILE_SET`); a folder without it is not forked.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# The same job lives in the same file in every recipe: know one, know them all.
FILE_SET = ("__init__.py", "train.py", "data.py", "model.py", "evaluate.py", "report.py",
            "README.md", "configs/default.cfg")


def missing_files(folder: Path) -> list[str]:
    """The files of `FILE_SET` that recipe `folder` lacks."""
    return [name for name in FILE_SET if not (folder / name).is_file()]


def fresh_readme(source: str, target: str) -> str:
    """The fork's README: its own name and commands; no results until it publishes."""
    python = ".venv/bin/python"
    return f"""# `{target}`

Forked from [`recipes/{source}`](../{source}/README.md) with `scripts/new_recipe.py`;
that README explains the method, the data and the flags this copy started from.

## Run

```
{python} recipes/{target}/train.py --smoke          # the whole path in seconds
{python} recipes/{target}/train.py                  # the default config
{python} -m pytest tests/recipes/test_{target}.py   # this recipe's tests
```

## Results

None published yet. `{python} recipes/{target}/train.py --flagfile=recipes/{target}/configs/default.cfg --publish`
writes `results/{target}/default.json`; `{python} scripts/make_tables.py` then fills the
section below, and `{python} scripts/reproduce.py {target}` re-runs it.

<!-- results:begin -->
<!-- results:end -->
"""


def rename(text: str, source: str, target: str) -> str:
    text = text.replace(f"recipes.{source}", f"recipes.{target}")
    text = text.replace(f"recipes/{source}", f"recipes/{target}")
    text = text.replace(f"test_{source}", f"test_{target}")
    return re.sub(rf"(['\"]){re.escape(source)}\1", rf"\g<1>{target}\g<1>", text)


def fork(source: str, target: str, repository: Path = REPOSITORY) -> list[Path]:
    """Copies recipe `source` to `target`; returns the files written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", target):
        raise ValueError(f"recipe name {target!r}: use lower case letters, digits and _")
    source_dir = repository / "recipes" / source
    target_dir = repository / "recipes" / target
    if not (source_dir / "train.py").exists():
        raise FileNotFoundError(f"no recipe {source!r} (recipes/{source}/train.py)")
    if target_dir.exists():
        raise FileExistsError(f"recipes/{target} already exists")
    missing = missing_files(source_dir)
    if missing:
        raise FileNotFoundError(f"recipes/{source} lacks the recipe file set: {missing}")
    shutil.copytree(source_dir, target_dir, ignore=shutil.ignore_patterns("__pycache__"))
    written = []
    for path in sorted(target_dir.rglob("*")):
        if path.name == "README.md" and path.parent == target_dir:
            path.write_text(fresh_readme(source, target))
            written.append(path)
        elif path.is_file() and path.suffix in {".py", ".cfg", ".md"}:
            path.write_text(rename(path.read_text(), source, target))
            written.append(path)
    source_test = repository / "tests" / "recipes" / f"test_{source}.py"
    if source_test.exists():
        target_test = source_test.with_name(f"test_{target}.py")
        target_test.write_text(rename(source_test.read_text(), source, target))
        written.append(target_test)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fork a recipe under a new name.")
    parser.add_argument("source", help="existing recipe, e.g. ranking")
    parser.add_argument("target", help="new recipe name, e.g. my_ranking")
    args = parser.parse_args(argv)
    try:
        written = fork(args.source, args.target)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(REPOSITORY)}")
    print(f"next: .venv/bin/python recipes/{args.target}/train.py --smoke  and  "
          f".venv/bin/python -m pytest tests/recipes/test_{args.target}.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
