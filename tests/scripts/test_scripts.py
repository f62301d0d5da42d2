"""The scripts, each run on a copy of the repository in a temporary directory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = "ranking"


@pytest.fixture
def copy(repository, tmp_path) -> Path:
    """The repository's code (not its results or runs) copied to a temporary folder."""
    target = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", ".venv", "runs", ".git", "results")
    for folder in ("common", "scripts", "tests"):
        shutil.copytree(repository / folder, target / folder, ignore=ignore)
    (target / "recipes").mkdir()
    shutil.copy(repository / "recipes" / "__init__.py", target / "recipes")
    shutil.copytree(repository / "recipes" / RECIPE, target / "recipes" / RECIPE, ignore=ignore)
    (target / "results").mkdir()
    shutil.copy(repository / "pyproject.toml", target)
    return target


def run(copy: Path, *command, timeout=900):
    """Runs `python *command` in the copy, whose packages come first on the path (as the
    editable install makes the repository's own come first for a user)."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([sys.executable, *command], cwd=copy, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_fork_in_the_repository_imports_and_runs_with_no_extra_step(repository, tmp_path):
    """The fork script in the real repository: the installed project finds the new folder
    (no sys.path edits, no reinstall), its smoke run passes, its README starts fresh."""
    name = f"zz_fork_{os.getpid()}"
    folder = repository / "recipes" / name
    test_file = repository / "tests" / "recipes" / f"test_{name}.py"
    try:
        forked = subprocess.run([sys.executable, "scripts/new_recipe.py", RECIPE, name],
                                cwd=repository, capture_output=True, text=True, timeout=60)
        assert forked.returncode == 0, forked.stderr
        readme = (folder / "README.md").read_text()
        assert f"recipes/{name}/train.py" in readme and f"reproduce.py {RECIPE}" not in readme
        assert "None published yet" in readme
        smoke = subprocess.run(
            [sys.executable, str(folder / "train.py"), "--smoke", "--epochs=1",
             f"--model_dir={tmp_path / 'run'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
        assert smoke.returncode == 0, smoke.stderr[-3000:]
        record = json.loads((tmp_path / "run" / "results.json").read_text())
        assert record["recipe"] == name
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        test_file.unlink(missing_ok=True)


def test_fork_carries_no_parent_numbers_and_passes_its_own_tests(copy):
    """The fork's code runs under its name; its references, tolerances, presets and
    README hold nothing of the parent's; its own short tests pass."""
    parent_report = (copy / "recipes" / RECIPE / "report.py").read_text()
    forked = run(copy, "scripts/new_recipe.py", RECIPE, "my_ranking")
    assert forked.returncode == 0, forked.stderr
    folder = copy / "recipes" / "my_ranking"
    train = (folder / "train.py").read_text()
    assert "recipes.my_ranking" in train and f"recipes.{RECIPE} " not in train
    assert "tolerances={}" in train
    assert "0.9348" in parent_report  # a KerasRS anchor of the parent ...
    assert "0.9348" not in (folder / "report.py").read_text()  # ... is not the fork's
    assert sorted(path.name for path in (folder / "configs").iterdir()) == ["default.cfg"]
    readme = (folder / "README.md").read_text()
    assert len(readme.splitlines()) < 40 and "None published yet" in readme
    test_file = copy / "tests" / "recipes" / "test_my_ranking.py"
    assert len(test_file.read_text().splitlines()) < 40
    tests = run(copy, "-m", "pytest", "-q", str(test_file), "-p", "no:cacheprovider")
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "2 passed" in tests.stdout
    again = run(copy, "scripts/new_recipe.py", RECIPE, "my_ranking")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_publish_reproduce_and_tables(copy):
    published = run(copy, f"recipes/{RECIPE}/train.py", "--smoke", "--epochs=2", "--publish",
                    f"--model_dir={copy / 'runs' / 'a'}")
    assert published.returncode == 0, published.stderr[-3000:]
    record_path = copy / "results" / RECIPE / "default.json"
    record = json.loads(record_path.read_text())
    assert record["tolerances"] and record["config"] == "default"

    reproduced = run(copy, "scripts/reproduce.py", RECIPE)
    assert reproduced.returncode == 0, reproduced.stdout[-3000:]
    assert "0 missed" in reproduced.stdout

    # A published number the code no longer reaches is reported as a miss.
    metric = next(iter(record["tolerances"]))
    record["metrics"][metric] += 10 * record["tolerances"][metric]
    record_path.write_text(json.dumps(record))
    missed = run(copy, "scripts/reproduce.py", f"{RECIPE}/default")
    assert missed.returncode == 1
    assert "MISS" in missed.stdout and metric in missed.stdout

    assert run(copy, "scripts/reproduce.py", "no_such_recipe").returncode != 0

    readme = copy / "recipes" / RECIPE / "README.md"
    readme.write_text("# x\n<!-- results:begin -->\nold\n<!-- results:end -->\n")
    tables = run(copy, "scripts/make_tables.py")
    assert tables.returncode == 0, tables.stderr
    text = readme.read_text()
    assert "old" not in text and f"{record['metrics'][metric]:.4g}" in text
    assert "item_mean" in text
    assert run(copy, "scripts/make_tables.py", "--check").returncode == 0


FORGED = {  # a record's field -> what reproduce.py says of it
    "a": ({"recipe": "../../x"}, "not one of recipes/"),
    "b": ({"command": "python recipes/ranking/train.py --no_such_flag=1"}, "no such flag"),
    "c": ({"command": "python recipes/ranking/train.py --flagfile=/etc/passwd"}, "not under"),
    "d": ({"command": "python x/train.py --epochs=1"}, "does not run"),
    "e": ({"command": "python recipes/ranking/train.py ; touch pwned"}, "not a --flag"),
}


def test_reproduce_runs_only_a_recipe_of_the_repository_with_its_own_flags(copy):
    """A record is data: whatever it says, reproduce.py runs nothing else."""
    (copy / "x").mkdir()
    (copy / "x" / "train.py").write_text("open('pwned', 'w').close()\n")
    (copy / "results" / RECIPE).mkdir(parents=True)
    for config, (change, _) in FORGED.items():
        record = {"recipe": RECIPE, "config": config, "metrics": {"m": 1.0},
                  "tolerances": {"m": 0.1},
                  "command": f"python recipes/{RECIPE}/train.py --smoke", **change}
        (copy / "results" / RECIPE / f"{config}.json").write_text(json.dumps(record))
    refused = run(copy, "scripts/reproduce.py", RECIPE)
    assert refused.returncode == 1, refused.stdout[-3000:]
    for config, (_, message) in FORGED.items():
        row = next(line for line in refused.stdout.splitlines()
                   if line.startswith(f"{RECIPE}/{config} ") or f"/{config} " in line)
        assert "MISS" in row and message in row, (config, row)
    assert not (copy / "pwned").exists()
