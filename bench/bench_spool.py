"""Collect's read of the admission spool: segments read one ahead on a thread against one after another.

    .venv/bin/python bench/bench_epoch.py --hosts 10000 --tasks 200000 --bundle 1000 --no-verify --keep /tmp/kept
    .venv/bin/python bench/bench_spool.py /tmp/kept/data/admitted-signatures.spool [--rounds 5]

Each path reads every segment (its bytes, their SHA-256 against the name, the IPC columns) and hands it to the same
consumer as collect's _take_kept (the columns as lists, the kept bytes hashed again as a bundle's): in turn, the next
segment read while this one is consumed (admission._read_segments), or each read when the last is done. Median and
range over alternating rounds, per segment, and their ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from rounds import alternating_rounds, print_rounds

from gonka_pipelines.local import admission


def consume(frame: pl.DataFrame | None) -> int:
    """What _take_kept does with a segment besides reading it: its columns as lists, its kept bytes hashed."""
    if frame is None:
        raise SystemExit("a segment no longer hashes to its name: not a spool the admission wrote")
    ids, raws, _ = frame["submission_id"].to_list(), frame["raw"].to_list(), frame["verified"].to_list()
    return len(ids) + admission._hashes_to(raws, "", bundle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spool", type=Path, help="an admission spool (bench_epoch.py --keep DIR: DIR/data/admitted-signatures.spool)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    segments = sorted(path.name for path in args.spool.iterdir() if len(path.name) == admission.SEGMENT_NAME_LENGTH)
    if not segments:
        raise SystemExit(f"no segments in {args.spool}")
    paths = {
        "one after another": lambda: [consume(admission._read_segment(args.spool, name)) for name in segments],
        "read ahead": lambda: [consume(frame) for frame in admission._read_segments(args.spool, segments)],
    }
    timings = alternating_rounds(paths, args.rounds, len(segments))
    size = sum((args.spool / name).stat().st_size for name in segments)
    print(f"bench_spool: {len(segments)} segments ({size / 2**20:,.0f} MiB), {args.rounds} rounds")
    print_rounds(timings, "a segment", [("read ahead / one after another", "read ahead", "one after another")])


if __name__ == "__main__":
    main()
