"""How epochs get launched: a schedule on a cron and a sensor on the inbox (both stopped by default), and the
three-click launch (Jobs → next_epoch → Materialize) that a launcher sensor turns into a run of the next epoch."""

import time

import dagster as dg
from pydantic import Field

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.defs import jobs
from gonka_pipelines.defs.partitions import EPOCHS, epochs
from gonka_pipelines.defs.runs import IN_PROGRESS, reap_dead_runs
from gonka_pipelines.local.config import read_yaml, validate_config
from gonka_pipelines.local.inbox import waiting_names
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.params import StrictConfig
from gonka_pipelines.stages.collect import admit_waiting

OPERATIONS_FILE = RESOURCES / "operations.yaml"


class ScheduleConfig(StrictConfig):
    cron: str
    timezone: str = "UTC"


class SensorConfig(StrictConfig):
    min_pending_tasks: int = Field(gt=0)
    max_wait_seconds: int = Field(gt=0)
    interval_seconds: int = Field(gt=0)
    admit_per_tick: int = Field(default=50_000, gt=0)


class IntervalConfig(StrictConfig):
    interval_seconds: int = Field(gt=0)


class OperationsConfig(StrictConfig):
    sprint_schedule: ScheduleConfig
    inbox_sensor: SensorConfig
    dead_run_reaper: IntervalConfig
    next_epoch_launcher: IntervalConfig


def load_operations(path=OPERATIONS_FILE) -> OperationsConfig:
    return validate_config(OperationsConfig, read_yaml(path), path)


OPERATIONS = load_operations()


def run_in_progress(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A run queued or running (any job: asset materializations launched from the graph write the chain too)."""
    return next(iter(instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS), limit=1)), None)


def next_epoch_run(instance: dg.DagsterInstance, layout: DataLayout, reason: str) -> dg.RunRequest | dg.SkipReason:
    """A run request for the head's successor, or why not: a run already queued or running (any job: asset
    materializations launched from the graph write the chain too), or no chain yet."""
    reap_dead_runs(instance)
    if running := run_in_progress(instance):
        return dg.SkipReason(f"run {running.run_id[:8]} ({running.job_name}, partition "
                             f"{running.tags.get('dagster/partition')}) is still in progress; epochs run one at a time")
    try:
        with ChainStore.open(layout.database, read_only=True) as store:
            epoch = store.head().height + 1
    except (ChainError, OSError) as error:  # e.g. a run holds the chain's write lock
        return dg.SkipReason(f"cannot read the chain head: {error}")
    return dg.RunRequest(partition_key=str(epoch), tags={"gonka/trigger": reason})


def admit_arrivals(instance: dg.DagsterInstance, layout: DataLayout, limit: int) -> tuple[str, int | None]:
    """Check the signatures of up to `limit` inbox entries that arrived since the last tick (local/admission.py), so
    the epoch that takes them need not; not while a run holds the chain. Returns a line for the tick's log and the
    submissions waiting (a bundle's lines each), None when nothing was checked."""
    if run_in_progress(instance):
        return "signatures not checked ahead: a run is in progress", None
    try:
        checked, waiting = admit_waiting(layout, limit)
    except (ChainError, OSError) as error:
        return f"signatures not checked ahead: {error}", None
    return f"checked {checked} new signature(s) ahead of the epoch; {waiting} submission(s) waiting", waiting


def launching(request: dg.RunRequest) -> dg.SensorResult:
    """A sensor's answer that runs `request` and first adds its epoch to the dynamic partitions."""
    return dg.SensorResult(run_requests=[request], dynamic_partitions_requests=[epochs.build_add_request([str(request.partition_key)])])


@dg.schedule(job=jobs.epoch_job, cron_schedule=OPERATIONS.sprint_schedule.cron, execution_timezone=OPERATIONS.sprint_schedule.timezone,
             default_status=dg.DefaultScheduleStatus.STOPPED, description="Recurring sprints: launch the next epoch on a cron.")
def recurring_sprints(context: dg.ScheduleEvaluationContext):
    request = next_epoch_run(context.instance, DataLayout.from_env(), "schedule")
    if isinstance(request, dg.RunRequest):
        context.instance.add_dynamic_partitions(EPOCHS, [str(request.partition_key)])
    return request


@dg.sensor(job=jobs.epoch_job, minimum_interval_seconds=OPERATIONS.inbox_sensor.interval_seconds,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Launch the next epoch when enough tasks wait in the inbox, or when the oldest has waited long enough.")
def inbox_sensor(context: dg.SensorEvaluationContext):
    config, layout = OPERATIONS.inbox_sensor, DataLayout.from_env()
    line, submissions = admit_arrivals(context.instance, layout, config.admit_per_tick)
    context.log.info(line)
    # lstat: an entry is judged by collect, never followed here (a dangling link must not crash the sensor)
    waiting = sorted((layout.inbox / name).lstat().st_mtime for name in waiting_names(layout.inbox))
    oldest_wait = time.time() - waiting[0] if waiting else 0.0
    pending = len(waiting) if submissions is None else submissions  # a bundle counts its lines once admitted
    if pending < config.min_pending_tasks and oldest_wait < config.max_wait_seconds:
        return dg.SkipReason(f"{pending} submissions waiting, the oldest for {oldest_wait:.0f}s "
                             f"(launch at {config.min_pending_tasks}, or once one has waited {config.max_wait_seconds}s)")
    request = next_epoch_run(context.instance, layout, "inbox")
    return request if isinstance(request, dg.SkipReason) else launching(request)


@dg.sensor(minimum_interval_seconds=OPERATIONS.dead_run_reaper.interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Always on, launches nothing: marks failed every run whose worker process died (kill -9, a crash), "
                       "freeing its pool slot and epoch, so a run launched from the UI and queued behind it goes on.")
def dead_run_reaper(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance)
    return dg.SkipReason(f"marked {len(reaped)} dead run(s) failed: {', '.join(r[:8] for r in reaped)}" if reaped
                         else "no run in progress has lost its process")


REQUEST_ASSET = dg.AssetKey("next_epoch_request")
LAUNCH_TAG = "gonka/launch_request"
"""Run tag of an epoch the launcher started: the storage id of the next_epoch_request materialization it answers."""


@dg.asset(key=REQUEST_ASSET, group_name=jobs.OPERATIONS, kinds={"dagster"}, owners=["team:gonka-core"],
          description="Materialize to run the next epoch: the always-on next_epoch_launcher sensor starts a run of the "
                      "`epoch` job for the head's successor within seconds (after the run in progress, if any). "
                      "No partition to pick.")
def next_epoch_request(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("next epoch requested; the next_epoch_launcher sensor launches it (Runs shows it within seconds)")
    return dg.MaterializeResult(metadata={"requested_by_run": context.run_id})


next_epoch_job = dg.define_asset_job(
    "next_epoch", selection=dg.AssetSelection.assets(REQUEST_ASSET),
    description="Launch the next epoch in three clicks from the landing page: Jobs → next_epoch → Materialize. The "
                "next_epoch_launcher sensor then runs the `epoch` job on the head's successor; Runs shows it.",
)


@dg.sensor(job=jobs.epoch_job, minimum_interval_seconds=OPERATIONS.next_epoch_launcher.interval_seconds,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Always on: turns each materialization of next_epoch_request (Jobs → next_epoch → Materialize) into "
                       "one run of the next epoch; a request made while an epoch runs waits for it.")
def next_epoch_launcher(context: dg.SensorEvaluationContext):
    handled = int(context.cursor or 0)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REQUEST_ASSET, after_storage_id=handled), limit=1, ascending=True).records
    if not records:
        return dg.SkipReason("no new request (Jobs → next_epoch → Materialize asks for one)")
    request = next_epoch_request_for(context.instance, records[0].storage_id)
    if isinstance(request, dg.SkipReason):
        return request  # the cursor stays: the request is answered once the run in progress ends
    context.update_cursor(str(records[0].storage_id))
    return launching(request)


def next_epoch_request_for(instance: dg.DagsterInstance, storage_id: int) -> dg.RunRequest | dg.SkipReason:
    """The run request answering one launch request (keyed by it, so it is launched once), or why it must wait."""
    request = next_epoch_run(instance, DataLayout.from_env(), "launch request")
    if isinstance(request, dg.SkipReason):
        return dg.SkipReason(f"a launch request waits: {request.skip_message}")
    return dg.RunRequest(partition_key=request.partition_key, run_key=f"launch-request-{storage_id}",
                         tags={**request.tags, LAUNCH_TAG: str(storage_id)})
