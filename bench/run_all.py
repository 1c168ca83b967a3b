"""Run every benchmark (what `make bench` calls): each as a subprocess of this interpreter, output streamed.

    .venv/bin/python bench/run_all.py

bench_sprint.py (mining throughput against a bare forward loop), bench_epoch.py --quick (an epoch's
bookkeeping, model compute replaced by precomputed results) and bench_training.py (training steps through the
project's accelerate path against a bare torch loop). A benchmark file that is not there yet is
skipped with a note; the exit status is non-zero if any benchmark that ran failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench_sprint.py", ()),
    ("bench_epoch.py", ("--quick",)),
    ("bench_training.py", ()),
)


def run(script: Path, args: tuple[str, ...]) -> int:
    """Run one benchmark with this interpreter from the repository root; its output goes straight through."""
    print(f"\n=== {script.name} {' '.join(args)}".rstrip(), flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, str(script), *args], cwd=BENCH.parent)
    print(f"=== {script.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.1f}s", flush=True)
    return code


def main() -> int:
    failed = []
    for name, args in BENCHMARKS:
        script = BENCH / name
        if not script.exists():
            print(f"\n=== {name}: skipped, {script.relative_to(BENCH.parent)} is not there yet", flush=True)
            continue
        if run(script, args) != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
