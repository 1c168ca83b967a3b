"""Each epoch's served model versions are re-derived by verify-chain from the committed versions and the params' rule:
a post-state that serves another version than the rule picks is reported, naming both."""

from __future__ import annotations

import json

from gonka_pipelines.chain.verify import served_mismatch, verify_chain

from support.chains import opened


def recorded_params(store, epoch: int) -> dict:
    return json.loads(store._scalar("SELECT params_json FROM epochs WHERE epoch = ?", [epoch]))


def test_the_demo_chain_serves_what_its_rule_picks_every_epoch(demo_template):
    with opened(demo_template, read_only=True) as store:
        heights = store.finalized_heights()
        for height in heights:
            assert served_mismatch(store, height, recorded_params(store, height)) is None, height
        losses = store.served_losses()
        assert [losses[h]["llm-tiny"] for h in heights] == sorted((losses[h]["llm-tiny"] for h in heights), reverse=True)
        assert losses[heights[-1]]["llm-tiny"] < losses[0]["llm-tiny"], "training lowered the served model's held-out loss"


def test_serving_another_version_than_the_rule_picks_is_reported(demo_layout):
    with opened(demo_layout) as store:
        head = store.head().height
        genesis_version = store.served_versions(0)["llm-tiny"]
        served = store.served_versions(head)["llm-tiny"]
        assert served != genesis_version
        params = recorded_params(store, head)
        store._execute("UPDATE served_versions SET version = ? WHERE epoch = ?", [genesis_version, head])
        problem = served_mismatch(store, head, params)
        assert problem is not None and genesis_version[:12] in problem and served[:12] in problem
        assert "rule lowest_eval_loss" in problem
        assert "no known training.served_rule" in served_mismatch(store, head, params | {"training": {"served_rule": "best"}})
        report = verify_chain(store)
        assert report.first_problem is not None and report.first_problem.height == head
        assert "served_versions" in report.first_problem.message
