"""Run the benchmarks and print one markdown table of figures, baselines and ratios.

`python -m bench.run_all [name ...]` runs the named benchmarks (all by default). These are
measurements, not tests: a missed target is printed with by how much, and the exit status
is non-zero only when a benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable

from bench import burst, fanout, intake, push_to_live, rollout_load
from bench.common import Row

BENCHMARKS: dict[str, Callable[[], list[Row]]] = {
    "intake": intake.run,
    "push-to-live": push_to_live.run,
    "burst": burst.run,
    "rollout": rollout_load.run,
    "fanout": fanout.run,
}


def table(rows: list[Row]) -> str:
    header = "| benchmark | metric | Nephelios | baseline | ratio | target | met |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.bench, row.metric, row.nephelios, row.baseline, row.ratio, row.target]
        lines.append("| " + " | ".join([*cells, row.met]) + " |")
    return "\n".join(lines)


def machine() -> str:
    cores = os.cpu_count() or 0
    python = sys.version.split()[0]
    return f"{cores} cores, Linux {platform.release()} {platform.machine()}, Python {python}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"of: {', '.join(BENCHMARKS)} (default all)")
    names = parser.parse_args().names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    rows: list[Row] = []
    failed = []
    for name in names:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            rows += BENCHMARKS[name]()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            rows.append(Row(name, "could not run", "see stderr"))
        print(f"bench: {name} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.\n")
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
