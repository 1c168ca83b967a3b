"""Recurring sprints and launches: the schedule, the inbox sensor and the three-click launcher add the next partition
and request its run; a second launch of an epoch while one runs is refused and the chain stays intact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.definitions import defs
from gonka_pipelines.defs.automation import (
    LAUNCH_TAG,
    OPERATIONS,
    REQUEST_ASSET,
    dead_run_reaper,
    inbox_sensor,
    load_operations,
    next_epoch_launcher,
    recurring_sprints,
)
from gonka_pipelines.defs.jobs import epoch_job
from gonka_pipelines.defs.launch import DAGSTER_YAML
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import REFUSED_TAG, ChainResource
from gonka_pipelines.local.admission import load_admitted
from gonka_pipelines.local.config import ConfigError


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as test_instance:
        yield test_instance


@pytest.fixture
def chain_env(genesis_layout, monkeypatch):
    """The automations read the chain from $GONKA_DATA_DIR, as under `make ui`."""
    monkeypatch.setenv("GONKA_DATA_DIR", str(genesis_layout.root))
    return genesis_layout


def test_both_automations_are_stopped_by_default_and_use_the_shipped_config():
    assert recurring_sprints.default_status == dg.DefaultScheduleStatus.STOPPED
    assert inbox_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert recurring_sprints.cron_schedule == "*/10 * * * *" == OPERATIONS.sprint_schedule.cron
    assert OPERATIONS.inbox_sensor.min_pending_tasks == 50


def test_the_three_click_launch_turns_each_request_into_one_run_of_the_next_epoch(chain_env, instance):
    """Jobs → next_epoch → Materialize records a request; the always-on launcher answers it once, for the head's
    successor (no partition to pick), and a request made while an epoch runs waits for it, cursor unmoved."""
    assert next_epoch_launcher.default_status == dg.DefaultSensorStatus.RUNNING
    assert REQUEST_ASSET not in defs.resolve_job_def("epoch").asset_layer.executable_asset_keys
    nothing = next_epoch_launcher(dg.build_sensor_context(instance=instance))
    assert isinstance(nothing, dg.SkipReason) and "no new request" in nothing.skip_message

    assert defs.resolve_job_def("next_epoch").execute_in_process(instance=instance).success
    running = create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED,
                                  tags={"dagster/partition": "1"})
    waiting = dg.build_sensor_context(instance=instance)
    result = next_epoch_launcher(waiting)
    assert isinstance(result, dg.SkipReason) and "a launch request waits" in result.skip_message
    assert waiting.cursor is None
    instance.report_run_canceled(running)

    context = dg.build_sensor_context(instance=instance)
    result = next_epoch_launcher(context)
    [request] = result.run_requests
    storage_id = instance.fetch_materializations(REQUEST_ASSET, limit=1).records[0].storage_id
    assert (request.partition_key, request.run_key) == ("1", f"launch-request-{storage_id}")
    assert request.tags[LAUNCH_TAG] == str(storage_id) and request.tags["gonka/trigger"] == "launch request"
    assert result.dynamic_partitions_requests[0].partition_keys == ["1"]
    assert context.cursor == str(storage_id)
    again = next_epoch_launcher(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(again, dg.SkipReason)


def test_a_bad_operations_file_names_the_file_and_field(tmp_path: Path):
    bad = tmp_path / "operations.yaml"
    bad.write_text("sprint_schedule: {cron: '*/10 * * * *'}\ninbox_sensor: {min_pending_tasks: 0, max_wait_seconds: 1, interval_seconds: 1}\n")
    with pytest.raises(ConfigError, match=r"operations.yaml: field 'inbox_sensor.min_pending_tasks'"):
        load_operations(bad)


def test_schedule_adds_the_next_partition_and_requests_its_run(chain_env, instance):
    request = recurring_sprints(dg.build_schedule_context(instance=instance))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "1"
    assert request.tags["gonka/trigger"] == "schedule"
    assert instance.get_dynamic_partitions(epochs.name) == ["1"]


def test_schedule_skips_while_an_epoch_runs(chain_env, instance):
    create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "1"})
    result = recurring_sprints(dg.build_schedule_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert "still in progress" in result.skip_message


def test_sensor_waits_for_enough_tasks_then_launches_the_next_epoch(chain_env, instance, submit, genesis):
    """Each tick first checks the signatures of what arrived (local/admission.py), then counts the waiting."""
    threshold = OPERATIONS.inbox_sensor.min_pending_tasks
    submit(threshold - 1)
    skipped = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    assert f"{threshold - 1} submissions waiting" in skipped.skip_message
    remembered = load_admitted(chain_env.admitted, genesis.chain_id)
    assert len(remembered) == threshold - 1 and all(r.verdicts == (True,) for r in remembered.values()), "the tick checked them ahead"

    submit(1, start_nonce=threshold - 1)
    result = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert [r.partition_key for r in result.run_requests] == ["1"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["1"]


def test_sensor_counts_a_bundles_lines_as_the_submissions_waiting(chain_env, instance, submit):
    """One inbox entry holding the threshold's worth of tasks launches the epoch as as many single entries would."""
    threshold = OPERATIONS.inbox_sensor.min_pending_tasks
    submit.bundle([submit.sign(nonce=n) for n in range(threshold - 1)])
    skipped = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and f"{threshold - 1} submissions waiting" in skipped.skip_message
    submit.bundle([submit.sign(nonce=threshold - 1)])
    result = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert [r.partition_key for r in result.run_requests] == ["1"]


def test_sensor_launches_a_few_tasks_once_the_oldest_has_waited_long_enough(chain_env, instance, submit):
    ids = submit(2)
    assert isinstance(inbox_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    long_ago = time.time() - OPERATIONS.inbox_sensor.max_wait_seconds - 1
    os.utime(chain_env.inbox / f"{ids[0]}.json", (long_ago, long_ago))
    result = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert [r.partition_key for r in result.run_requests] == ["1"]


@pytest.mark.slow
def test_a_second_launch_of_a_running_epoch_is_refused_and_the_chain_stays_intact(genesis_layout, tmp_path):
    """Run A (a subprocess) runs epoch 1; run B launches epoch 1 while A holds it: B is refused (its steps skipped, the
    run tagged with why), A's block stands."""
    home = tmp_path / "shared_dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "GONKA_DATA_DIR": str(genesis_layout.root)}
    instance = dg.DagsterInstance.from_config(str(_home_with_config(home)))
    first = subprocess.Popen([sys.executable, "-m", "gonka_pipelines.cli", "run"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not instance.get_runs(dg.RunsFilter(job_name=epoch_job.name, statuses=[dg.DagsterRunStatus.STARTED])):
        assert time.time() < deadline and first.poll() is None, "run A never started"
        time.sleep(0.2)
    second = defs.resolve_job_def("epoch").execute_in_process(
        instance=instance, partition_key="1", raise_on_error=False,
        resources={"chain": ChainResource(data_dir=str(genesis_layout.root))})
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    assert not [e for e in second.all_events if e.event_type_value in ("STEP_FAILURE", "ASSET_MATERIALIZATION")]
    refused = instance.get_run_by_id(second.run_id).tags[REFUSED_TAG]
    assert "is being run by run" in refused or "is finalized" in refused
    with ChainStore.open(genesis_layout.database, read_only=True) as store:
        assert store.head().height == 1
        assert verify_chain(store).first_problem is None


def _home_with_config(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    return home


def test_sensor_counts_a_dangling_link_without_following_it(chain_env, instance, submit):
    """A link to nothing named *.json is an inbox entry like any other (collect rejects it); the sensor must not crash."""
    submit(1)
    os.symlink(chain_env.inbox / "nowhere", chain_env.inbox / "dangling.json")
    skipped = inbox_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and "2 submissions waiting" in skipped.skip_message


def test_a_run_whose_process_is_gone_is_marked_failed_and_the_schedule_goes_on(chain_env, instance):
    """A run left STARTED by a killed process (its recorded pid no longer exists) does not make the automations skip."""
    import socket

    from gonka_pipelines.defs.runs import PROCESS_TAG, this_process

    gone = create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED,
                               tags={"dagster/partition": "1", PROCESS_TAG: f"{socket.gethostname()}:999999999:1"})
    alive = this_process()
    request = recurring_sprints(dg.build_schedule_context(instance=instance))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "1"
    assert instance.get_run_by_id(gone.run_id).status == dg.DagsterRunStatus.FAILURE
    create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED,
                        tags={"dagster/partition": "1", PROCESS_TAG: alive})
    assert isinstance(recurring_sprints(dg.build_schedule_context(instance=instance)), dg.SkipReason), \
        "a run whose process lives still holds the chain"


def test_the_always_on_reaper_frees_a_queue_stuck_behind_a_dead_ui_run(instance):
    """A run launched from the UI whose worker was killed stays STARTED: with the schedule and the inbox sensor off,
    the dead-run reaper (on by default, launching nothing) marks it failed so the queued run behind it can start."""
    import socket

    from gonka_pipelines.defs.runs import PROCESS_TAG, this_process

    assert dead_run_reaper.default_status == dg.DefaultSensorStatus.RUNNING
    assert inbox_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_sensor_def("dead_run_reaper").name == "dead_run_reaper", "the code location loads it"
    dead = create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED,
                               tags={"dagster/partition": "1", PROCESS_TAG: f"{socket.gethostname()}:999999999:1"})
    living = create_run_for_test(instance, job_name=epoch_job.name, status=dg.DagsterRunStatus.STARTED,
                                 tags={"dagster/partition": "1", PROCESS_TAG: this_process()})
    result = dead_run_reaper(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and f"marked 1 dead run(s) failed: {dead.run_id[:8]}" in result.skip_message
    assert [instance.get_run_by_id(r.run_id).status for r in (dead, living)] == [
        dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED]
    assert "no run in progress has lost its process" in dead_run_reaper(dg.build_sensor_context(instance=instance)).skip_message
