"""Regenerates the results tables of the READMEs from the published records.

    python scripts/make_tables.py           # rewrite the tables in place
    python scripts/make_tables.py --check   # exit 1 if a README is out of date

Recipe READMEs get, between `<!-- results:begin -->` and `<!-- results:end -->`, one
section per published record: metrics beside baselines, the record's own tables,
published references, timing and plots. The top README gets one row per recipe
between `<!-- recipes:begin -->` and `<!-- recipes:end -->`; WORKSPACE.md one row per
published config (command, seeds, wall time, what it reproduces) between
`<!-- configs:begin -->` and `<!-- configs:end -->`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import intervals, results

REPOSITORY = results.REPOSITORY

SUFFIXES = ("_ci_low", "_ci_high")


def cell(values: dict, name: str) -> str:
    return intervals.show(intervals.from_record(values, name))


def table(columns: list, rows: list) -> list[str]:
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        shown = [intervals.show(v) for v in row]
        lines.append("| " + " | ".join(shown) + " |")
    return lines


def headline(record: dict) -> str:
    return record.get("headline") or next(iter(record.get("tolerances") or record["metrics"]))


def record_section(record: dict, path: Path, readme_dir: Path) -> list[str]:
    metrics, baselines = record["metrics"], record.get("baselines", {})
    names = [n for n in metrics if not n.endswith(SUFFIXES)]
    lines = [f"### `{record['config']}`", "", f"`{record['command']}`", ""]
    lines += table(["metric", "this run", *baselines],
                   [[n, cell(metrics, n), *(cell(b, n) for b in baselines.values())]
                    for n in names])
    for name, extra in record.get("tables", {}).items():
        lines += ["", f"**{name}**", ""] + table(extra["columns"], extra["rows"])
    if record.get("references"):
        lines += ["", "Published reference numbers:", ""]
        lines += [f"- {r['name']}: {r.get('metric', '')} {r['value']} ({r['source']})"
                  for r in record["references"]]
    timing = record.get("timing", {})
    device = record.get("device", {})
    if "examples_per_second" in timing:
        lines += ["", f"Timing: {timing['examples_per_second']:,.0f} examples/s, median step "
                  f"{timing['median_step_seconds'] * 1000:.1f} ms, "
                  f"wall {timing['wall_seconds']:.0f} s "
                  f"on {device.get('cpu', '?')} ({device.get('cpu_count', '?')} cores"
                  f"{', GPUs: ' + ', '.join(device['gpus']) if device.get('gpus') else ''}); "
                  f"TensorFlow {record['versions'].get('tensorflow')}, seed {record['seed']}, "
                  f"commit {str(record.get('git_commit'))[:12]}."]
    for image in sorted(path.parent.glob(f"{record['config']}-*.png")):
        relative = Path("..") / ".." / image.relative_to(REPOSITORY)
        if readme_dir == REPOSITORY:
            relative = image.relative_to(REPOSITORY)
        lines += ["", f"![{image.stem}]({relative.as_posix()})"]
    return lines + [""]


def config_row(record: dict) -> list:
    """recipe/config, command, seeds, wall time, and the references it is compared with."""
    flags = record.get("flags", {})
    seeds = flags.get("num_seeds") or 1
    wall = record.get("timing", {}).get("wall_seconds")
    anchors = "; ".join(f"{r['name']} {r.get('metric', '')} {r['value']}"
                        for r in record.get("references", [])) or "– (no published anchor)"
    sources = sorted({r["source"] for r in record.get("references", [])})
    if sources:
        anchors += f" (source: {'; '.join(sources)})"
    command = " ".join(word for word in record["command"].split()  # what, not where
                       if not word.startswith(("--model_dir", "--overwrite")))
    return [f"{record['recipe']}/{record['config']}", f"`{command}`", seeds,
            "?" if wall is None else f"{wall / 60:.1f} min", anchors]


def replace_between(text: str, begin: str, end: str, body: list[str]) -> str:
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + "\n".join(body) + "\n" + end + tail


def fill(readme: Path, marker: str, body: list[str], check: bool) -> bool:
    """Puts `body` between the README's `marker` comments; True if that changed it.

    With `check`, only tells whether it would change.
    """
    text = readme.read_text()
    updated = replace_between(text, f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->", body)
    if updated != text and not check:
        readme.write_text(updated)
    return updated != text


def render(check: bool = False) -> int:
    stale = []
    recipe_rows, config_rows = [], []
    for recipe_dir in sorted((REPOSITORY / "recipes").glob("*/")):
        readme = recipe_dir / "README.md"
        records = [(results.load(p), p) for p in results.published(recipe_dir.name)]
        if not records:
            continue
        body = []
        for record, path in records:
            body += record_section(record, path, recipe_dir)
            config_rows.append(config_row(record))
        if readme.exists() and fill(readme, "results", body, check):
            stale.append(readme)
        default = next((r for r, _ in records if r["config"] == "default"), records[0][0])
        key = headline(default)
        best = max(default.get("baselines", {}).items(),
                   key=lambda item: item[1].get(key, float("-inf")), default=(None, {}))
        recipe_rows.append([f"[{recipe_dir.name}](recipes/{recipe_dir.name}/README.md)",
                            default["dataset"].get("name", "?"), key,
                            cell(default["metrics"], key),
                            f"{best[0]}: {cell(best[1], key)}" if best[0] else "–"])
    readme = REPOSITORY / "README.md"
    if readme.exists() and recipe_rows:
        body = table(["recipe", "default data", "headline metric", "this recipe",
                      "best baseline (same run)"], recipe_rows)
        if fill(readme, "recipes", body, check):
            stale.append(readme)
    workspace = REPOSITORY / "WORKSPACE.md"
    if workspace.exists() and config_rows:
        body = table(["config", "command", "seeds", "wall time (2 cores)", "reproduces"],
                     config_rows)
        if fill(workspace, "configs", body, check):
            stale.append(workspace)
    for path in stale:
        print(f"{'out of date' if check else 'updated'}: {path.relative_to(REPOSITORY)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Regenerate README tables from results/.")
    parser.add_argument("--check", action="store_true", help="only report stale READMEs")
    sys.exit(render(parser.parse_args().check))
