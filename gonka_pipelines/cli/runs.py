"""Epochs run through Dagster from the command line: a line per stage as it ends (a progress bar under them on a
terminal) and the run's page in the Dagster UI."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.paths import DataLayout

UI_PORT_ENV, DEFAULT_UI_PORT = "GONKA_UI_PORT", "3000"
"""`make ui UI_PORT=...` serves the Dagster UI on that port (3000 by default) and tells `gonka` through GONKA_UI_PORT."""


class _StageProgress:
    """Reports each step of an epoch's run as it ends (its place, name, outcome and seconds): a line per step, and on a
    terminal a progress bar below them (rich) that counts the steps and the time. Use as a context manager."""

    def __init__(self, epoch: int, steps: int, console: Console | None = None):
        self.steps, self.done, self.last = steps, 0, time.perf_counter()
        self.console = console or Console(highlight=False)
        self.bar = Progress(TextColumn(f"epoch {epoch}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=self.console, transient=True) if self.console.is_terminal else None
        self.task = self.bar.add_task("starting", total=steps) if self.bar else None

    def __enter__(self) -> _StageProgress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, step: str, succeeded: bool) -> None:
        now, self.done = time.perf_counter(), self.done + 1
        line = f"  [{self.done}/{self.steps}] {step} {'done' if succeeded else 'FAILED'} in {now - self.last:.1f}s"
        self.last = now
        if self.bar is None or self.task is None:
            print(line, flush=True)
            return
        self.bar.console.print(line, markup=False)
        self.bar.update(self.task, advance=1, description=f"{step} {'done' if succeeded else 'FAILED'}")


def _next_epoch(layout: DataLayout) -> int:
    with ChainStore.open(layout.database, read_only=True) as store:
        return store.head().height + 1


def run_epochs(layout: DataLayout, count: int, progress: bool = False, verbose: bool = False, engine: str | None = None,
               ray_address: str | None = None) -> int:
    """Run `count` epochs through Dagster, one line each; with progress, a line per stage as it ends (on a terminal with
    a progress bar under them; with verbose, the stages' own logs too) and the run's UI page; a failed run always names
    its page. engine and ray_address override resources/compute.yaml's for these runs."""
    from gonka_pipelines.defs.launch import dagster_instance, epoch_step_count, run_next_epoch
    from gonka_pipelines.defs.resources import ComputeResource

    instance = dagster_instance(layout)
    steps = epoch_step_count() if progress else 0
    compute = ComputeResource(engine=engine, ray_address=ray_address) if engine or ray_address else None
    for _ in range(count):
        started = time.perf_counter()
        epoch = _next_epoch(layout)
        with _StageProgress(epoch, steps) if progress else nullcontext() as on_step:
            run = run_next_epoch(layout, instance, "INFO" if verbose else "WARNING", on_step, compute)
        outcome = "succeeded" if run.success else f"REFUSED ({run.refused})" if run.refused else "FAILED"
        print(f"epoch {run.epoch}: run {run.run_id[:8]} {outcome} in {time.perf_counter() - started:.1f}s"
              + ("" if run.success and not progress else f"; in the UI ({_make_ui(layout)}): {_ui_url()}/runs/{run.run_id}"))
        if not run.success:
            return 1
    return 0


def _ui_url() -> str:
    return f"http://127.0.0.1:{os.environ.get(UI_PORT_ENV) or DEFAULT_UI_PORT}"


def _make_ui(layout: DataLayout) -> str:
    """The `make ui` command that shows this data folder's runs (the Makefile's DATA defaults to ./data)."""
    port = os.environ.get(UI_PORT_ENV) or DEFAULT_UI_PORT
    settings = ([] if layout.root == (Path.cwd() / "data").resolve() else [f"DATA={layout.root}"]) + (
        [] if port == DEFAULT_UI_PORT else [f"UI_PORT={port}"])
    return f"`{' '.join(['make ui', *settings])}`"
