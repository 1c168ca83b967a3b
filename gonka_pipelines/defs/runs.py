"""Runs whose process died (kill -9, a power cut) must never block the next epoch: each run records the process that
executes it, and before anything waits on "a run in progress", runs whose process is gone are marked failed and
their pool slots freed."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

PROCESS_TAG = "gonka/process"
"""`host:pid:start` of the process executing a run's steps (start: its start time in clock ticks, so a reused pid
is not mistaken for it)."""
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _start_time(pid: int) -> str | None:
    """The process's start time from /proc (None when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"


def record_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Tag the run with the process executing it, unless already tagged with it (every step asks: the first step of
    a run launched from the UI records its worker; `gonka run` tags its runs at launch)."""
    process = this_process()
    if run.tags.get(PROCESS_TAG) != process:
        instance.add_run_tags(run.run_id, {PROCESS_TAG: process})


def process_gone(run: dg.DagsterRun) -> bool:
    """Whether the process recorded for a run, on this host, no longer exists (unknown or other hosts: not gone)."""
    host, _, rest = run.tags.get(PROCESS_TAG, "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    start = _start_time(int(pid))
    return start is None or (started != "" and start != started)


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every run in progress whose process is gone, freeing its pool slots; returns their ids."""
    reaped = []
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS)):
        if process_gone(run):
            instance.report_run_failed(run, message=f"run {run.run_id[:8]} stopped: its process ({run.tags[PROCESS_TAG]}) "
                                                    "is gone (killed?); marked failed so the next epoch can run")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def run_active(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run still holds its epoch: queued or running, and its process (when known) alive."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return False
    if process_gone(run):
        reap_dead_runs(instance)
        return False
    return True
