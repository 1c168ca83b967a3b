"""Inference runs on model versions: once an epoch's training produced a version with a lower held-out loss, the
epoch's post-state records it as served (training.served_rule), the next epoch's executors run it and validators re-run
it, and a task that names another version (here the genesis one) runs that one instead."""

from __future__ import annotations

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.protocol.training import VersionScore, served_version, served_versions
from gonka_pipelines.stages.environment import build_environment

from support.chains import opened, run_stages, training_chain

PROMPT = "The Python standard library"


def test_the_next_epoch_serves_the_trained_version_and_a_task_may_name_another(tmp_path, every_task_checked):
    layout, submitter, genesis_version, shards = training_chain(tmp_path, [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1)])
    submitter.train(nonce=0, base_version=genesis_version, shards=shards[:1], steps=8, batch_size=8)
    with opened(layout) as store:
        assert store.served_versions(0) == {"llm-tiny": genesis_version}, "genesis serves the seeded weights"
        run_stages(store, layout, 1)
        (trained,) = [v.version for v in store.version_scores() if v.epoch == 1]
        assert store.served_versions(1) == {"llm-tiny": trained} == served_versions(store.version_scores(), "lowest_eval_loss")
        env = build_environment(store, layout, 2)
    assert env.served == {"llm-tiny": trained}
    trained_output = env.compute.generate("llm-tiny", trained, "", "honest", [PROMPT], 12)["tokens"][0].as_py()
    genesis_output = env.compute.generate("llm-tiny", genesis_version, "", "honest", [PROMPT], 12)["tokens"][0].as_py()
    seeded_output = TorchCompute(env.params.sprint.model, env.prev_hash).generate("llm-tiny", "", "", "honest", [PROMPT], 12)["tokens"][0].as_py()
    assert genesis_output == seeded_output, "the genesis version's checkpoint holds exactly the seeded weights"
    assert trained_output != genesis_output, "the trained checkpoint, not the genesis weights, answers"

    served_ids = submitter(2, "dev-ada", start_nonce=1, prompt=PROMPT, max_tokens=12)
    pinned_ids = submitter(1, "dev-ada", start_nonce=3, prompt=PROMPT, max_tokens=12, version=genesis_version)
    with opened(layout) as store:
        run_stages(store, layout, 2)
        rows = store._records("""SELECT t.version, r.output_tokens, o.outcome FROM tasks t JOIN task_results r USING (task_id)
                                 JOIN task_outcomes o USING (task_id) WHERE t.epoch = 2 ORDER BY t.nonce""")
        assert [r["version"] for r in rows] == ["", "", genesis_version], "the row keeps what the task signed"
        assert [r["output_tokens"][:12] for r in rows] == [trained_output, trained_output, genesis_output]
        assert all(r["outcome"] != "invalidated" for r in rows), "validators re-run the version each task ran: honest work passes"
        assert verify_chain(store).first_problem is None
    assert len(served_ids) == 2 and len(pinned_ids) == 1


def test_the_served_rules():
    """lowest_eval_loss: the lowest held-out loss, ties to the earliest epoch; latest: the newest version."""
    versions = [VersionScore("aa", "m", 0, 5.6), VersionScore("bb", "m", 1, 3.9), VersionScore("cc", "m", 2, 3.9),
                VersionScore("dd", "m", 3, 4.2), VersionScore("ee", "other", 0, 1.0)]
    assert served_version(versions, "m", "lowest_eval_loss") == "bb"
    assert served_version(versions, "m", "latest") == "dd"
    assert served_versions(versions, "latest") == {"m": "dd", "other": "ee"}
