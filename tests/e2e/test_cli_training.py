"""`gonka train` orders training like `gonka submit` orders inference (next free nonce, checked before it is written),
and `gonka model list | show` prints the versions the epochs produced, with their lineage down to the shard hashes."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.local.inbox import waiting_names

from support.chains import opened, run_stages


def gonka(layout, *args: str) -> int:
    return cli.main(["--data-dir", str(layout.root), *args])


def test_an_order_trains_a_version_that_model_list_and_show_trace_to_its_shards(genesis_layout, capsys, every_task_checked):
    """A version needs validators (its held-out loss is theirs): every_task_checked makes sure the order is drawn."""
    assert gonka(genesis_layout, "submit", "--developer", "dev-ada", "--prompt", "hello") == 0
    assert gonka(genesis_layout, "train", "--developer", "dev-ada", "--steps", "4", "--seed", "3", "--shards",
                 *sorted_shards(genesis_layout)[:1]) == 0
    out = capsys.readouterr().out
    assert "(nonce 1): 4 steps × 4 windows of llm-tiny from version" in out, "inference and training share nonces"
    with opened(genesis_layout) as store:
        (genesis_version,) = store.model_versions()
        run_stages(store, genesis_layout, 1)
        (trained,) = [v for v in store.model_versions() if v != genesis_version]
    assert gonka(genesis_layout, "model", "list") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].startswith(genesis_version[:12]) and "genesis" in listing[1]
    assert listing[2].startswith(trained[:12]) and listing[2].endswith("served") and genesis_version[:12] in listing[2]
    assert gonka(genesis_layout, "model", "show", trained[:12]) == 0
    shown = capsys.readouterr().out
    shard = sorted_shards(genesis_layout)[0]
    assert "on train-" in shown and shard[:12] in shown and "genesis: seeded random weights" in shown
    assert shown.index(trained) < shown.index(genesis_version), "from the version down to genesis"


def sorted_shards(layout) -> list[str]:
    with opened(layout, read_only=True) as store:
        return sorted(store.training_shards())


@pytest.mark.parametrize("args, reason", [
    (["--steps", "65"], "steps_out_of_range: steps 65 not in 1..64"),
    (["--batch-size", "0"], "batch_out_of_range"),
    (["--learning-rate", "0.5"], "learning_rate_out_of_range"),
    (["--shards", "f" * 64], "unknown_shard"),
    (["--base", "e" * 64], "unknown_model_version"),
    (["--model", "llm-nope"], "holds no version of model 'llm-nope'"),
])
def test_an_order_the_collector_would_reject_is_never_written(genesis_layout, capsys, args, reason):
    assert gonka(genesis_layout, "train", "--developer", "dev-ada", *args) == 2
    assert reason in capsys.readouterr().err
    assert waiting_names(genesis_layout.inbox) == []


def test_model_show_needs_one_version(genesis_layout, capsys):
    assert gonka(genesis_layout, "model", "show", "abc") == 2
    assert "unknown_model_version: 'abc' names 0 model version(s)" in capsys.readouterr().err
