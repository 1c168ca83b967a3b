"""`gonka submit`: the next free nonce counts submissions still waiting, and a task the collector would reject is refused
before anything is written."""

from __future__ import annotations

import re
import subprocess

import pytest

from gonka_pipelines import cli
from gonka_pipelines.cli import runs
from gonka_pipelines.local.admission import load_admitted
from gonka_pipelines.local.inbox import waiting_names
from gonka_pipelines.local.keys import save_key
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair

from support.chains import opened, run_stages


def submit(layout, *args: str) -> int:
    return cli.main(["--data-dir", str(layout.root), "submit", "--developer", "dev-ada", *args])


def test_repeated_submits_take_consecutive_nonces_and_are_all_accepted(genesis_layout, capsys):
    for prompt in ("first", "second", "third"):
        assert submit(genesis_layout, "--prompt", prompt) == 0
    out = capsys.readouterr().out
    assert [line.split("(nonce ")[1].split(")")[0] for line in out.splitlines()] == ["0", "1", "2"]
    with opened(genesis_layout) as store:
        summary = run_stages(store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.submitted, summary.accepted) == (3, 3)
    assert submit(genesis_layout, "--prompt", "fourth") == 0
    assert "(nonce 3)" in capsys.readouterr().out, "accepted nonces count too"


@pytest.mark.parametrize("args, reason", [
    (["--prompt", "x", "--model", "llm-nope"], "unknown_model: model 'llm-nope' is served by no host"),
    (["--prompt", "x" * 201], "prompt_too_long: prompt is 201 bytes, limit 200"),
    (["--prompt", "x", "--max-tokens", "33"], "max_tokens_out_of_range: max_tokens 33 not in 1..32"),
    (["--prompt", "x", "--max-price", "99"], "price_too_low: max_price 99 below the price 100"),
    (["--prompt", "x", "--nonce", "0", "--max-tokens", "1"], None),
    (["--prompt", "x", "--version", "abcdef123456"],
     "unknown_model_version: 'abcdef123456' names 0 model version(s) of model 'llm-tiny'; give 12 or more hex digits of "
     "one (`gonka model list`)"),
])
def test_a_task_the_collector_would_reject_is_never_written(genesis_layout, capsys, args, reason):
    code = submit(genesis_layout, *args)
    if reason is None:
        assert code == 0 and len(waiting_names(genesis_layout.inbox)) == 1
        return
    assert code == 2 and waiting_names(genesis_layout.inbox) == []
    assert capsys.readouterr().err == f"error: not submitted, the collector would reject it: {reason}\n"


def test_a_key_without_an_account_is_refused(genesis_layout, capsys):
    save_key(genesis_layout.key_file("dev-stranger"), KeyPair.derive("x", "dev-stranger", "y"))
    code = cli.main(["--data-dir", str(genesis_layout.root), "submit", "--developer", "dev-stranger", "--prompt", "hi"])
    assert code == 2 and waiting_names(genesis_layout.inbox) == []
    assert "unknown_account: no developer account for key" in capsys.readouterr().err


def test_a_task_may_name_a_model_version_by_prefix(genesis_layout, capsys):
    """--version takes a unique prefix of a version hash; the signed task names the whole hash and runs on it."""
    with opened(genesis_layout, read_only=True) as store:
        (genesis_version,) = store.model_versions()
    assert submit(genesis_layout, "--prompt", "pinned", "--version", genesis_version[:12]) == 0
    with opened(genesis_layout) as store:
        run_stages(store, genesis_layout, 1, through="epoch_tasks")
        assert store._query("SELECT version FROM tasks WHERE epoch = 1") == [(genesis_version,)]


def test_a_missing_developer_key_names_the_file_and_the_developers(genesis_layout, capsys):
    assert cli.main(["submit", "--developer", "dev-nobody", "--prompt", "x", "--data-dir", str(genesis_layout.root)]) == 2
    err = capsys.readouterr().err
    assert f"no key for developer 'dev-nobody' ({genesis_layout.key_file('dev-nobody')})" in err
    assert "the developers on this chain: dev-ada, dev-grace, dev-linus" in err and "Traceback" not in err


def test_data_dir_is_taken_after_the_command_too(genesis_layout, capsys):
    assert cli.main(["summary", "--data-dir", str(genesis_layout.root)]) == 0
    after = capsys.readouterr().out
    assert cli.main(["--data-dir", str(genesis_layout.root), "summary"]) == 0
    assert capsys.readouterr().out == after and after.startswith("height  hash")


def test_a_closed_pipe_ends_quietly(genesis_layout):
    import subprocess
    import sys

    command = [sys.executable, "-c", "from gonka_pipelines.cli import main; import sys; sys.exit(main())",
               "--data-dir", str(genesis_layout.root), "summary"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.close()  # the reader goes away before the first line
    assert reader.wait(timeout=120) in (0, 141) and b"Traceback" not in reader.stderr.read()


@pytest.mark.slow
def test_run_prints_each_stage_as_it_ends_and_the_runs_ui_page(genesis_layout, capsys):
    assert submit(genesis_layout, "--prompt", "hello") == 0
    capsys.readouterr()
    assert cli.main(["run", "--data-dir", str(genesis_layout.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    stages = [line.split("] ")[1].split()[0] for line in lines if line.startswith("  [")]
    assert stages[0] == "epoch_tasks" and stages[-1] == "block" and len(stages) == int(lines[0].split("/")[1].split("]")[0])
    assert "rewards_supply_conserved" in stages, "blocking checks are steps too"
    assert lines[-1].startswith("epoch 1: run ") and "succeeded" in lines[-1]
    assert f"in the UI (`make ui DATA={genesis_layout.root}`): http://127.0.0.1:3000/runs/" in lines[-1], "the folder's own UI"
    assert cli.main(["run", "-q", "--data-dir", str(genesis_layout.root)]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 2: run ")], "-q: one line"


@pytest.mark.slow
def test_run_on_a_terminal_draws_a_progress_bar_under_the_stage_lines(genesis_layout):
    """In a pseudo-terminal `gonka run` draws a bar (rich) counting the steps, with each step's line above it; the
    bar goes when the epoch ends and the epoch's line stays."""
    import os
    import pty
    import sys

    assert submit(genesis_layout, "--prompt", "hello") == 0
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "gonka_pipelines.cli", "run", "--data-dir", str(genesis_layout.root)],
                               stdin=secondary, stdout=secondary, stderr=secondary, env={**os.environ, "COLUMNS": "140"})
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 1 << 16)
        except OSError:  # the terminal closed (EIO): the process is gone
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert process.wait(timeout=300) == 0
    text = output.decode(errors="replace")
    assert "━" in text, "the bar"
    counts = {int(done) for done, _ in re.findall(r"epoch 1 .*?(\d+)/(\d+)", text)}
    assert len(counts) > 3, f"the bar advanced step by step: {sorted(counts)}"
    assert "[1/" in text and "epoch_tasks done in" in text and "block done in" in text
    assert re.search(r"epoch 1: run [0-9a-f]{8} succeeded", text)


def test_the_run_link_follows_the_ui_port_and_names_the_make_ui_that_serves_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = DataLayout(tmp_path / "data")
    assert (runs._make_ui(here), runs._ui_url()) == ("`make ui`", "http://127.0.0.1:3000")
    monkeypatch.setenv("GONKA_UI_PORT", "3131")
    elsewhere = DataLayout(tmp_path / "other")
    assert (runs._make_ui(elsewhere), runs._ui_url()) == (f"`make ui DATA={elsewhere.root} UI_PORT=3131`", "http://127.0.0.1:3131")


def test_admit_checks_new_submissions_once_and_the_epoch_takes_them(genesis_layout, genesis, capsys):
    """`gonka admit` checks what arrived since the last check (nothing the second time); the epoch takes every one."""
    for prompt in ("first", "second"):
        assert submit(genesis_layout, "--prompt", prompt) == 0
    admit = ["--data-dir", str(genesis_layout.root), "admit"]
    capsys.readouterr()
    assert cli.main(admit) == 0
    assert capsys.readouterr().out == "checked 2 new signature(s) ahead of the epoch; 2 submission(s) wait in the inbox\n"
    assert cli.main(admit) == 0
    assert capsys.readouterr().out.startswith("checked 0 new signature(s)")
    assert len(load_admitted(genesis_layout.admitted, genesis.chain_id)) == 2, "a verdict per submission"
    with opened(genesis_layout) as store:
        summary = run_stages(store, genesis_layout, 1, through="epoch_tasks")["epoch_tasks"]
    assert (summary.submitted, summary.accepted) == (2, 2)


def test_a_nonce_an_earlier_epoch_took_is_refused(finalized_layout, capsys):
    """The check reads whether the chain used this one (developer, nonce), as the collector does."""
    code = submit(finalized_layout, "--prompt", "again", "--nonce", "0")
    assert code == 2 and waiting_names(finalized_layout.inbox) == []
    assert "replayed_nonce: nonce 0 already used by" in capsys.readouterr().err
