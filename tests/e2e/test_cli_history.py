"""`gonka host NAME` follows one host across epochs, `gonka status ID` tells one submission's fate; amounts in GNK."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.reports.units import gnk


def run(demo_template, capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--data-dir", str(demo_template.root)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("units, text", [(0, "0"), (1, "0.000000001"), (1_000_000_000, "1"),
                                         (1_234_567_890_123, "1,234.567890123"), (-2_500_000_000, "-2.5")])
def test_gnk_keeps_every_base_unit_and_groups_thousands(units, text):
    assert gnk(units, 10**9) == text


def test_host_history_has_one_line_per_finalized_epoch_that_adds_up(demo_template, capsys):
    code, out, _ = run(demo_template, capsys, "host", "host-alpha")
    assert code == 0
    lines = out.splitlines()
    epochs = [line for line in lines if line.strip()[:1].isdigit()]
    assert [int(line.split()[0]) for line in epochs] == [1, 2, 3]
    with ChainStore.open(demo_template.database, read_only=True) as store:
        paid = store._scalar("SELECT sum(r.payout) FROM rewards r JOIN hosts h USING (address) WHERE h.name = 'host-alpha'")
    assert lines[-1].startswith(f"total paid over 3 epoch(s): {gnk(paid, 10**9)} GNK") and paid > 0
    assert all("claimed" in line and "accepted" in line for line in epochs)


def test_host_history_shows_a_cheat_caught(demo_template, capsys):
    _, out, _ = run(demo_template, capsys, "host", "host-fake")
    assert out.count("REJECTED") == 3, "its sprint is rejected every epoch"
    code, _, err = run(demo_template, capsys, "host", "host-nobody")
    assert code == 2 and "host-nobody" in err and "host-alpha" in err, "an unknown host lists the hosts"


def test_status_follows_an_invalidated_task_and_a_rejected_submission(demo_template, capsys):
    with ChainStore.open(demo_template.database, read_only=True) as store:
        task = store._scalar("""SELECT o.task_id FROM task_outcomes o JOIN hosts h ON h.address = o.executor
                                WHERE o.outcome = 'invalidated' AND h.name = 'host-garbled' ORDER BY o.task_id LIMIT 1""")
        rejected = store._scalar("SELECT submission_id FROM rejected_tasks WHERE reason = 'replayed_nonce' LIMIT 1")
    code, out, _ = run(demo_template, capsys, "status", task[:10])
    assert code == 0 and f"task {task}" in out and "executed by host-garbled: completed" in out
    assert "validation: INVALIDATED" in out and "FAIL (tokens_differ)" in out and "fee_refund" in out
    code, out, _ = run(demo_template, capsys, "status", rejected[:12])
    assert code == 0 and "REJECTED" in out and "rejected: replayed_nonce:" in out


def test_status_refuses_short_and_unknown_ids(demo_template, capsys):
    assert run(demo_template, capsys, "status", "abc")[2].startswith("error: give at least 6 characters")
    code, _, err = run(demo_template, capsys, "status", "ffffffffffff")
    assert code == 2 and "no submission or task id starts with 'ffffffffffff'" in err


def test_prove_takes_a_key_prefix_or_an_account_name(demo_template, capsys):
    import json

    with ChainStore.open(demo_template.database, read_only=True) as store:
        task = store._scalar("SELECT task_id FROM tasks ORDER BY task_id LIMIT 1")
        alpha = store._scalar("SELECT address FROM accounts WHERE name = 'host-alpha'")
    code, out, _ = run(demo_template, capsys, "prove", "tasks", task[:10])
    assert code == 0 and json.loads(out)["id"] == task and json.loads(out)["verified"]
    code, out, _ = run(demo_template, capsys, "prove", "accounts", "host-alpha")
    assert code == 0 and json.loads(out)["id"] == alpha
    code, _, err = run(demo_template, capsys, "prove", "tasks", "")
    assert code == 2 and "starts more than one key of tasks" in err


def test_every_argument_is_described():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"gonka {name}: {'/'.join(action.option_strings) or action.dest} has no description"


def test_summary_says_what_its_columns_count_and_what_to_do_next(demo_template, capsys):
    from gonka_pipelines.reports.summary import HOSTS_LEGEND

    code, out, _ = run(demo_template, capsys, "summary")
    assert code == 0 and out.rstrip().endswith(HOSTS_LEGEND)
    assert "paid (GNK)" in out and "`gonka host NAME`" in HOSTS_LEGEND and "`make ui`" in HOSTS_LEGEND
