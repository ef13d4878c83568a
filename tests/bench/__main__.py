"""`make bench`: run every tests/bench/bench_*.py module's `main()`; each prints its own table.

Benchmarks start the same real components as the integration tests and report ratios against plain helm (or the
naive approach) measured in the same run, so the numbers mean something on any machine.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import tests.bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="names of benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(tests.bench.__path__) if m.name.startswith("bench_"))
    failed = 0
    for name in names:
        if args.only and name.removeprefix("bench_") not in args.only and name not in args.only:
            continue
        print(f"\n### {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"tests.bench.{name}")
        try:
            module.main()
        except Exception as error:  # a failed benchmark is reported and the others still run
            failed += 1
            print(f"{name} FAILED: {error!r}", flush=True)
        print(f"({name} took {time.monotonic() - started:.1f}s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
