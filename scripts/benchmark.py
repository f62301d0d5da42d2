"""Benchmarks, measured as ratios inside one run.

    python scripts/benchmark.py losses      # each loss vs its Keras twin, with and without XLA
    python scripts/benchmark.py ranking     # the ranking recipe's model vs the TFRS tutorial's
    python scripts/benchmark.py multitask   # gradient balancing vs static weighting

Each `scripts/bench_<name>.py` has `main(argv) -> int`, writes
results/benchmarks/<name>.json and prints a table. Benchmarks use `common`, code of their
own, recipes run as processes, or (to time what a recipe trains) the recipe's own
`model.build` and config.
"""

import importlib
import sys
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)

SCRIPTS = Path(__file__).resolve().parent
BENCHMARKS = sorted(path.stem.removeprefix("bench_") for path in SCRIPTS.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python scripts/benchmark.py {{{','.join(BENCHMARKS)}}} [options]",
              file=sys.stderr)
        return 2
    # This script's folder is on sys.path (Python puts it there): bench_* import by name.
    return importlib.import_module(f"bench_{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
