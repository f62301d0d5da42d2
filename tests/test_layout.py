"""The repository's shape: one file set and one vocabulary per recipe, a recipe a function
of its config, inputs as arguments."""

import ast
import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

from common.config import Shared

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
RECIPES = sorted(path.parent for path in (REPOSITORY / "recipes").glob("*/train.py"))
# Written out here, not imported from scripts/new_recipe.py, so the two can disagree.
FILE_SET = ("__init__.py", "config.py", "train.py", "data.py", "model.py", "evaluate.py",
            "report.py", "README.md", "configs/default.cfg")
# The same job has the same name in every recipe: module -> functions.
VOCABULARY = {"data": ("load",), "model": ("build", "serving", "predict"),
              "evaluate": ("evaluate",), "train": ("train",)}


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


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_every_recipe_names_its_jobs_alike(recipe):
    missing = []
    for module_name, names in VOCABULARY.items():
        module = importlib.import_module(f"recipes.{recipe.name}.{module_name}")
        missing += [f"{module_name}.{name}" for name in names
                    if not callable(getattr(module, name, None))]
    assert not missing, f"recipes/{recipe.name} lacks {missing}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_a_recipe_is_a_function_of_its_config(recipe):
    """train(config) with its frozen Config, whose every field has a default and help;
    nothing in the recipe reads absl's global flags."""
    config_class = importlib.import_module(f"recipes.{recipe.name}.config").Config
    assert issubclass(config_class, Shared) and dataclasses.is_dataclass(config_class)
    assert config_class.__dataclass_params__.frozen
    for field in dataclasses.fields(config_class):
        assert field.default is not dataclasses.MISSING, field.name
        assert field.metadata.get("help") or not field.metadata.get("flag", True), field.name
    train = importlib.import_module(f"recipes.{recipe.name}.train").train
    assert list(inspect.signature(train).parameters) == ["config"]
    readers = [str(path.relative_to(REPOSITORY)) for path in recipe.rglob("*.py")
               if re.search(r"\bFLAGS\b|from absl import flags", path.read_text())]
    assert not readers, f"absl flags read in {readers}"


def test_two_recipes_import_in_one_process():
    completed = subprocess.run(
        [sys.executable, "-c", "from recipes.ranking import train as a; "
         "from recipes.fraud_detection import train as b; print(a.train, b.train)"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_common_reads_no_global_flags():
    """Only cli.py touches absl's FLAGS, to parse absl's own flags (--verbosity, ...)."""
    readers = [str(path.relative_to(REPOSITORY)) for path in _python_files("common")
               if path.name != "cli.py" and re.search(r"\bFLAGS\b", path.read_text())]
    assert not readers, f"common reads absl's FLAGS: {readers}"


def test_entry_points_need_no_path_manipulation():
    edits = [str(path.relative_to(REPOSITORY)) for path in _python_files("recipes", "scripts")
             if "sys.path.insert" in path.read_text()]
    assert not edits, f"sys.path.insert in {edits}"


def _imported_modules(path: Path) -> set[str]:
    """The modules `path` imports (its import statements, not text in its strings)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_scripts_import_no_recipe_internals():
    """Scripts run recipes as users do (their command line); only a benchmark, which
    times a recipe's own network, imports it."""
    importers = [str(path.relative_to(REPOSITORY)) for path in _python_files("scripts")
                 if not path.name.startswith("bench_")
                 and any(name.split(".")[0] == "recipes" for name in _imported_modules(path))]
    assert not importers, f"scripts importing recipes: {importers}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_train_py_has_no_dead_run_function(recipe):
    assert not re.search(r"^def run\(", (recipe / "train.py").read_text(), re.M)
