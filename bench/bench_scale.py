"""The scaling curve of an epoch's bookkeeping: bench_epoch.py at growing hosts (tasks fixed) and growing tasks (hosts
fixed), each point run --rounds times in a fresh process; per stage the median seconds and range, and how fast it
grows between points (the exponent of seconds ~ size^k: 1 is linear).

    .venv/bin/python bench/bench_scale.py [--hosts 100 1000 10000] [--tasks 5000 50000 500000] [--rounds 2]
                                          [--validation committee] [--bundle 1000] [--out bench-scale]

Writes OUT/points.json (every run), OUT/scale.csv (medians) and OUT/scale-hosts.png, OUT/scale-tasks.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parent / "bench_epoch.py"
SHOWN = ("epoch_tasks", "sprint_verdicts", "task_results", "task_verdicts", "rewards", "block_proposal", "block")
"""The stages plotted (the others stay under a second at every size measured)."""


def run_point(hosts: int, tasks: int, validation: str, out: Path, round_: int, bundle: int | None) -> dict:
    """One bench_epoch.py run in its own process (peak memory is the point's own); its JSON record."""
    record = out / f"point-{hosts}x{tasks}-{round_}.json"
    if not record.exists():
        subprocess.run([sys.executable, str(BENCH), "--hosts", str(hosts), "--tasks", str(tasks), "--validation", validation,
                        *(["--bundle", str(bundle)] if bundle else []), "--json", str(record)],
                       check=True, stdout=subprocess.DEVNULL)
    return json.loads(record.read_text())


def summarize(runs: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per stage (and the epoch and verify-chain): median, lowest and highest seconds over the rounds."""
    by_stage: dict[str, list[float]] = {}
    for run in runs:
        stages = run["epochs"][0]
        for stage in stages:
            by_stage.setdefault(stage["stage"], []).append(stage["seconds"])
        by_stage.setdefault("epoch", []).append(sum(s["seconds"] for s in stages))
        by_stage.setdefault("bookkeeping", []).append(sum(s["seconds"] - s["stand_in"] for s in stages))
        by_stage.setdefault("verify-chain", []).append(run.get("verify_seconds", math.nan))
        by_stage.setdefault("peak MiB", []).append(max(s["peak_mib"] for s in stages))
    return {name: (statistics.median(values), min(values), max(values)) for name, values in by_stage.items()}


def print_sweep(title: str, sizes: list[int], points: list[dict[str, tuple[float, float, float]]]) -> None:
    """One row per stage: median (range) at each size, then the growth exponent between the last two sizes."""
    print(f"\n{title}")
    header = ["stage", *(f"{n:,}" for n in sizes), f"growth {sizes[-2]:,}->{sizes[-1]:,}" if len(sizes) > 1 else ""]
    rows = []
    for name in points[0]:
        cells = [f"{p[name][0]:.2f} ({p[name][1]:.2f}-{p[name][2]:.2f})" if name != "peak MiB" else f"{p[name][0]:,.0f}"
                 for p in points]
        low, high = points[-2][name][0] if len(points) > 1 else 0, points[-1][name][0]
        growth = (f"{math.log(high / low) / math.log(sizes[-1] / sizes[-2]):.2f}"
                  if len(points) > 1 and low > 0.05 and high > 0 else "-")
        rows.append([name, *cells, growth])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, [("-" * w) for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def plot(path: Path, label: str, sizes: list[int], points: list[dict[str, tuple[float, float, float]]]) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in (*SHOWN, "epoch", "verify-chain"):
        if name in points[0]:
            axis.plot(sizes, [p[name][0] for p in points], marker="o", label=name,
                      linewidth=2.5 if name in ("epoch", "verify-chain") else 1.2)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel(label)
    axis.set_ylabel("seconds (median)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 1000, 10000], help="host counts (tasks fixed)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[5000, 50000, 500000], help="task counts (hosts fixed)")
    parser.add_argument("--fixed-tasks", type=int, default=5000, help="tasks per epoch in the hosts sweep")
    parser.add_argument("--fixed-hosts", type=int, default=1000, help="hosts in the tasks sweep")
    parser.add_argument("--rounds", type=int, default=2, help="runs per point (median and range)")
    parser.add_argument("--validation", choices=("full", "committee"), default="committee")
    parser.add_argument("--bundle", type=int, default=None,
                        help="tasks per inbox bundle (bench_epoch.py --bundle); default: a file per task")
    parser.add_argument("--out", type=Path, default=Path("bench-scale"), help="folder for the runs, CSV and plots "
                                                                                 "(a rerun reuses finished points)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sweeps = {"hosts": [(h, args.fixed_tasks) for h in args.hosts], "tasks": [(args.fixed_hosts, t) for t in args.tasks]}
    with open(args.out / "scale.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sweep", "hosts", "tasks", "stage", "median_s", "min_s", "max_s"])
        for sweep, grid in sweeps.items():
            points = [summarize([run_point(h, t, args.validation, args.out, r, args.bundle) for r in range(args.rounds)])
                      for h, t in grid]
            sizes = [h if sweep == "hosts" else t for h, t in grid]
            fixed = f"{args.fixed_tasks:,} tasks" if sweep == "hosts" else f"{args.fixed_hosts:,} hosts"
            print_sweep(f"{sweep} sweep ({fixed}, {args.validation} sprint validation, {args.rounds} rounds): median s (range)",
                        sizes, points)
            plot(args.out / f"scale-{sweep}.png", f"{sweep} ({fixed})", sizes, points)
            for (h, t), point in zip(grid, points):
                for name, (median, low, high) in point.items():
                    writer.writerow([sweep, h, t, name, f"{median:.4f}", f"{low:.4f}", f"{high:.4f}"])
    print(f"\nwrote {args.out / 'scale.csv'}, {args.out / 'scale-hosts.png'}, {args.out / 'scale-tasks.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
