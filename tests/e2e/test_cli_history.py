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


@pytest.mark.parametrize("units, base, places, text", [
    (0, 10**9, None, "0"), (1, 10**9, None, "0.000000001"), (1_000_000_000, 10**9, None, "1"),
    (1_234_567_890_123, 10**9, None, "1,234.567890123"), (-2_500_000_000, 10**9, None, "-2.5"),
    (46_155, 10**9, 9, "0.000046155"), (0, 10**9, 9, "0.000000000"), (4_999, 5_000, None, "0.999800000"),
    (1, 7, 3, "0.143")])
def test_gnk_keeps_every_base_unit_and_groups_thousands(units, base, places, text):
    """Exact when the base is a power of ten; tables pad to fixed places so decimal points line up."""
    assert gnk(units, base, places) == text


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
    code, out, _ = run(demo_template, capsys, "status", task[:10].upper())
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
    code, _, err = run(demo_template, capsys, "prove", "tasks", task[:1])
    assert code == 2 and f"{task[:1]!r} starts more than one key of tasks" in err and "give more characters" in err
    code, _, err = run(demo_template, capsys, "prove", "tasks", "host-alpha")
    assert code == 2 and "no row 'host-alpha' in tasks" in err, "a name stands for an address only where addresses are keys"


def test_help_gives_defaults_including_zero(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option (rich wraps at the console's width)
    assert cli.main(["train", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("--seed" in line and "draws the training windows [default: 0]" in line for line in lines)
    assert any("--steps" in line and "optimizer steps [default: 8]" in line for line in lines)


def test_every_argument_is_described():
    """Every option and argument has a description, and one with a default shows it (or says it in words)."""
    import typer

    from gonka_pipelines.cli.app import app

    commands = typer.main.get_command(app).commands
    assert len(commands) == 18
    for name, command in commands.items():
        for param in command.params:
            assert param.help, f"gonka {name}: {param.name} has no description"
            if param.default not in (None, False) and not param.required:
                assert param.show_default or "default" in param.help, f"gonka {name}: {param.name} hides its default"


def test_summary_says_what_its_columns_count_and_what_to_do_next(demo_template, capsys):
    from gonka_pipelines.reports.summary import HOSTS_LEGEND

    code, out, _ = run(demo_template, capsys, "summary")
    assert code == 0 and out.rstrip().endswith(HOSTS_LEGEND)
    paid = [line.split()[-2] for line in out.splitlines() if line.startswith("host-")]
    assert "paid (GNK)" in out and len(paid) == 9 and len({len(p.split(".")[1]) for p in paid}) == 1, "decimal points line up"


def test_status_names_a_waiting_bundle_and_its_lines(genesis_layout, submit, capsys):
    """A bundle waiting in the inbox shows as a bundle with its lines' ids; a line's id shows as that line."""
    raws = [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    bundle = submit.bundle(raws)
    single = submit.raw(b'{"a": 4}')
    code, out, _ = run(genesis_layout, capsys, "status", bundle[:12])
    assert code == 0 and out.splitlines()[0] == (f"bundle {bundle}/ (3 submission(s): {bundle}/0 to {bundle}/2): waiting "
                                                 f"in the inbox ({genesis_layout.inbox}) for the next epoch to collect it")
    code, out, _ = run(genesis_layout, capsys, "status", f"{bundle}/2")
    assert code == 0 and out.startswith(f"submission {bundle}/2, line 2 of bundle {bundle}/: waiting in the inbox")
    code, out, _ = run(genesis_layout, capsys, "status", single[:12])
    assert code == 0 and out.startswith(f"submission {single}: waiting in the inbox")
    empty = genesis_layout.inbox / "0123456789abcdef.jsonl"
    empty.write_bytes(b"")
    code, out, _ = run(genesis_layout, capsys, "status", "0123456789ab")
    assert code == 0 and out.startswith("bundle 0123456789abcdef/ (to be refused whole: malformed: an empty bundle (no line))")
