"""How `gonka` reads its command line (typer): --data-dir before or after the command or from the environment, help
that shows every default, usage errors that name the valid choices, and --shards repeated or comma-separated."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainError
from gonka_pipelines.cli import chain

from support.chains import opened


def gonka(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_data_dir_before_after_or_from_the_environment(genesis_layout, tmp_path, capsys, monkeypatch):
    """One given after the command wins over one given before; with neither, $GONKA_DATA_DIR."""
    chain, empty = str(genesis_layout.root), str(tmp_path / "empty")
    code, expected, _ = gonka(capsys, "--data-dir", chain, "summary")
    assert code == 0 and expected.startswith("height  hash")
    assert gonka(capsys, "summary", "--data-dir", chain) == (0, expected, "")
    assert gonka(capsys, "--data-dir", empty, "summary", "--data-dir", chain) == (0, expected, "")
    code, _, err = gonka(capsys, "--data-dir", chain, "summary", "--data-dir", empty)
    assert code == 2 and err.startswith(f"error: {empty}/chain.duckdb: no chain here yet")
    monkeypatch.setenv("GONKA_DATA_DIR", chain)
    assert gonka(capsys, "summary") == (0, expected, "")


def test_help_lists_the_commands_and_shows_each_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option (rich wraps at the console's width)
    code, out, _ = gonka(capsys, "--help")
    assert code == 0 and "`gonka COMMAND --help` shows every option with its default" in out
    commands = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ ") and not line.startswith("│ --")}
    assert {"init", "submit", "train", "model", "run", "demo", "summary", "verify-chain", "explain", "replay", "what-if",
            "sweep", "explorer", "security", "host", "status", "prove"} <= set(commands)
    assert "Sign a task with a developer key and put it in the inbox." in commands["submit"]
    code, out, _ = gonka(capsys, "submit", "--help")
    options = {next(word for word in line.split() if word.startswith("--")): line for line in out.splitlines() if " --" in line}
    assert code == 0 and "most tokens to generate [default: 16]" in options["--max-tokens"]
    assert "[default: llm-tiny]" in options["--model"] and "[required]" in options["--developer"]
    assert "(default: $GONKA_DATA_DIR, else " in options["--data-dir"], "a computed default in words"
    code, out, _ = gonka(capsys, "explorer", "--help")
    assert code == 0 and "[env var: GONKA_EXPLORER_PORT] [default: 8787]" in out


@pytest.mark.parametrize("args, named", [
    (["model", "frob"], ["'frob' is not one of 'list', 'show'"]),
    (["run", "--engine", "gpu"], ["'gpu' is not one of 'local', 'ray'"]),
    (["run", "-v", "-q"], ["-v/--verbose and -q/--quiet exclude each other"]),
    (["sumary"], ["Did you mean 'summary'?", "The commands: init, submit, train, model, run"]),
    (["submit", "--prompt", "x"], ["Missing option", "--developer"]),
])
def test_a_usage_error_exits_2_naming_the_valid_choices(capsys, monkeypatch, args, named):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = gonka(capsys, *args)
    assert code == 2 and out == "" and err.startswith("Usage: gonka ")
    assert all(text in err for text in named), err


@pytest.mark.parametrize("shards", [["--shards", "{0},{1}"], ["--shards", "{0}", "--shards", "{1}"]])
def test_shards_are_taken_repeated_or_comma_separated(genesis_layout, capsys, shards):
    with opened(genesis_layout, read_only=True) as store:
        first, second = sorted(store.training_shards())[:2]
    code, out, _ = gonka(capsys, "--data-dir", str(genesis_layout.root), "train", "--developer", "dev-ada",
                         *(arg.format(first, second) for arg in shards))
    assert code == 0 and out.rstrip().endswith("on 2 shard(s)")


@pytest.mark.parametrize("raised, code, message", [
    (KeyboardInterrupt(), 130, "interrupted (SIGINT): the chain is as it was before the interrupted epoch's last write"),
    (KeyboardInterrupt("SIGTERM"), 130, "interrupted (SIGTERM): "),
    (ChainError("no such block"), 2, "error: no such block"),
])
def test_a_command_stopped_or_refused_ends_with_a_line_and_its_code(genesis_layout, capsys, monkeypatch, raised, code, message):
    def stopped(store):
        raise raised

    monkeypatch.setattr(chain, "_print_summary", stopped)
    returned, out, err = gonka(capsys, "summary", "--data-dir", str(genesis_layout.root))
    assert (returned, out) == (code, "") and err.startswith(message) and err.count("\n") == 1
