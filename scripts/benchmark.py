"""Benchmarks, measured as ratios inside one run.

    python scripts/benchmark.py losses    # each loss vs its Keras twin, with and without XLA
    python scripts/benchmark.py ranking   # the ranking recipe's model vs the TFRS tutorial's

Each writes results/benchmarks/<name>.json and prints a table.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)

BENCHMARKS = ("losses", "ranking")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python scripts/benchmark.py {{{','.join(BENCHMARKS)}}} [options]",
              file=sys.stderr)
        return 2
    if argv[0] == "losses":
        import bench_losses

        return bench_losses.main(argv[1:]) or 0
    import bench_ranking

    return bench_ranking.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
