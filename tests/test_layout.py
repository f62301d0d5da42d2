"""The repository's shape: one file set per recipe, small files, inputs as arguments."""

import re
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
RECIPES = sorted(path.parent for path in (REPOSITORY / "recipes").glob("*/train.py"))
# Written out here, not imported from scripts/new_recipe.py, so the two can disagree.
FILE_SET = ("__init__.py", "train.py", "data.py", "model.py", "evaluate.py", "report.py",
            "README.md", "configs/default.cfg")
MAX_LINES = 300


def test_there_are_five_recipes():
    assert {path.name for path in RECIPES} >= {
        "ranking", "fraud_detection", "face_embedding", "financial_regression",
        "depth_segmentation"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_every_recipe_has_the_file_set(recipe):
    missing = [name for name in FILE_SET if not (recipe / name).is_file()]
    assert not missing, f"recipes/{recipe.name} lacks {missing}"


def test_the_fork_script_checks_the_same_file_set():
    import importlib.util

    spec = importlib.util.spec_from_file_location("new_recipe",
                                                  REPOSITORY / "scripts" / "new_recipe.py")
    new_recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(new_recipe)
    assert set(new_recipe.FILE_SET) == set(FILE_SET)


def _python_files(*folders):
    for folder in folders:
        yield from (path for path in (REPOSITORY / folder).rglob("*.py")
                    if "__pycache__" not in path.parts)


def test_no_file_in_recipes_or_common_passes_the_size_budget():
    long = {str(path.relative_to(REPOSITORY)): count
            for path in _python_files("recipes", "common")
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_only_flags_py_reads_flags_in_common():
    readers = [str(path.relative_to(REPOSITORY)) for path in _python_files("common")
               if path.name != "flags.py" and re.search(r"\bFLAGS\.", path.read_text())]
    assert not readers, f"common reads FLAGS outside flags.py: {readers}"


def test_entry_points_need_no_path_manipulation():
    edits = [str(path.relative_to(REPOSITORY)) for path in _python_files("recipes", "scripts")
             if "sys.path.insert" in path.read_text()]
    assert not edits, f"sys.path.insert in {edits}"


def test_scripts_import_no_recipe_internals():
    importers = [str(path.relative_to(REPOSITORY)) for path in _python_files("scripts")
                 if re.search(r"^\s*(from|import) recipes\b", path.read_text(), re.M)]
    assert not importers, f"scripts importing recipes: {importers}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_train_py_has_no_dead_run_function(recipe):
    assert not re.search(r"^def run\(", (recipe / "train.py").read_text(), re.M)
