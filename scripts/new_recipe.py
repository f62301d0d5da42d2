"""Forks a recipe: its code under a new name, carrying nothing of the parent's results.

    python scripts/new_recipe.py ranking my_ranking

Creates recipes/my_ranking/ (the code, with `recipes.ranking` and `recipes/ranking`
renamed; configs/default.cfg only) and a short tests/recipes/test_my_ranking.py (the
smoke run in-process, the saved model, a refused flag). The fork imports as
`recipes.my_ranking` with no extra step (the project is installed in editable mode).

Nothing the parent measured comes along: no records, no presets but the default, no
reference numbers (`report.references` returns [] and module-level `*REFERENCES*`
tables are emptied) and no tolerances (`training.finish(tolerances={})`): they were
the parent's, and are false for the fork until it publishes its own. The README is a
short one to fill in.

Every recipe folder has the same file set (`FILE_SET`); a folder without it is not forked.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# The same job lives in the same file in every recipe: know one, know them all.
FILE_SET = ("__init__.py", "config.py", "train.py", "data.py", "model.py", "evaluate.py",
            "report.py", "README.md", "configs/default.cfg")


def missing_files(folder: Path) -> list[str]:
    """The files of `FILE_SET` that recipe `folder` lacks."""
    return [name for name in FILE_SET if not (folder / name).is_file()]


def fresh_readme(source: str, target: str) -> str:
    """The fork's README: its own name and commands; no results until it publishes."""
    python = ".venv/bin/python"
    return f"""# `{target}`

What this recipe trains, on which data, with which loss: _fill in_.

Forked from `recipes/{source}` with `scripts/new_recipe.py`. To train on your own data,
edit `config.py` (the settings and their defaults), `data.py` (`load`: read and check
your file) and, if the task changes, `model.py` and `evaluate.py`.

## Run

```
{python} recipes/{target}/train.py --smoke          # the whole path in seconds
{python} recipes/{target}/train.py                  # the default config
{python} -m pytest tests/recipes/test_{target}.py   # this recipe's tests
```

## Results

None published yet.
`{python} recipes/{target}/train.py --flagfile=recipes/{target}/configs/default.cfg --publish`
writes `results/{target}/default.json`; `{python} scripts/make_tables.py` then fills the
section below, and `{python} scripts/reproduce.py {target}` re-runs it. Add the reference
numbers you compare with, and their sources, in `report.references`.

<!-- results:begin -->
<!-- results:end -->
"""


def fresh_test(target: str) -> str:
    """The fork's own tests: its smoke run in this process, its saved model, a bad flag."""
    return f'''"""Tests of the {target} recipe (written by scripts/new_recipe.py: add your own)."""

import math

import pytest

from common import cli, models
from recipes.{target}.config import Config

RECIPE = "{target}"


def test_smoke_run_records_a_finite_headline_and_keeps_its_model(train_recipe):
    run = train_recipe(RECIPE, "--smoke")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.record["recipe"] == RECIPE and run.record["references"] == []
    assert math.isfinite(run.record["metrics"][run.record["headline"]])
    assert models.load_model(run.model_dir / "model.keras") is not None


def test_a_bad_flag_is_refused_naming_it():
    with pytest.raises(cli.FlagError, match="--epochs"):
        cli.parse(Config, ["--epochs=0"])
'''


def _replace(text: str, edits: list[tuple[ast.AST, str]]) -> str:
    """`text` with each node's source replaced (the nodes of one parse of `text`)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    for node, replacement in sorted(edits, key=lambda edit: (edit[0].lineno, edit[0].col_offset),
                                    reverse=True):
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        text = text[:begin] + replacement + text[end:]
    return text


def without_references(report: str) -> str:
    """report.py with empty reference tables and a `references` that returns []."""
    tree = ast.parse(report)
    edits = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any("REFERENCES" in getattr(target, "id", "") for target in targets):
                empty = "{}" if isinstance(node.value, ast.Dict) else "[]"
                edits.append((node.value, empty))
        elif isinstance(node, ast.FunctionDef) and node.name == "references":
            first, last = node.body[0], node.body[-1]
            body = ast.Module(body=node.body, type_ignores=[])
            body.lineno, body.col_offset = first.lineno, first.col_offset
            body.end_lineno, body.end_col_offset = last.end_lineno, last.end_col_offset
            edits.append((body, '"""The reference numbers this recipe is compared with, '
                                'each with its source: none yet."""\n    return []'))
    return _replace(report, edits)


def without_tolerances(train: str) -> str:
    """train.py with `training.finish(..., tolerances={})`, and without the `common`
    modules only the parent's tolerances used (`from common import ...`)."""
    edits = [(keyword.value, "{}") for node in ast.walk(ast.parse(train))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "finish"
             for keyword in node.keywords if keyword.arg == "tolerances"]
    train = _replace(train, edits)
    tree = ast.parse(train)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    edits = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "common":
            kept = [alias.name for alias in node.names if alias.name in used]
            if len(kept) < len(node.names):
                edits.append((node, f"from common import {', '.join(kept)}" if kept else ""))
    return _replace(train, edits)


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
    for preset in (target_dir / "configs").glob("*.cfg"):
        if preset.name != "default.cfg":
            preset.unlink()  # the parent's presets reproduce the parent's anchors
    written = []
    for path in sorted(target_dir.rglob("*")):
        if path.name == "README.md" and path.parent == target_dir:
            path.write_text(fresh_readme(source, target))
        elif path.is_file() and path.suffix in {".py", ".cfg", ".md"}:
            text = rename(path.read_text(), source, target)
            if path == target_dir / "report.py":
                text = without_references(text)
            elif path == target_dir / "train.py":
                text = without_tolerances(text)
            elif path.suffix == ".cfg":
                text = "".join(line for line in text.splitlines(keepends=True)
                               if not line.startswith("#") or "train.py" in line)
            path.write_text(text)
        else:
            continue
        written.append(path)
    target_test = repository / "tests" / "recipes" / f"test_{target}.py"
    target_test.write_text(fresh_test(target))
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
