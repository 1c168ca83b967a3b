"""Inference is served by the network's served model version: once an epoch's training produced a version with a
lower held-out loss, the next epoch's executors run it and validators re-run it, and their outputs differ from the
genesis weights' (the checkpoint really is what serves)."""

from __future__ import annotations

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.protocol.training import served_version
from gonka_pipelines.stages.environment import build_environment, served_checkpoints

from support.chains import opened, run_stages, training_chain


def test_the_next_epoch_serves_the_trained_version(tmp_path):
    layout, submitter, genesis_version, shards = training_chain(tmp_path, [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1)])
    submitter.train(nonce=0, base_version=genesis_version, shards=shards[:1], steps=8, batch_size=8)
    with opened(layout) as store:
        run_stages(store, layout, 1)
        (trained,) = [v.version for v in store.version_scores() if v.epoch == 1]
        assert served_version(store.version_scores(), "llm-tiny") == trained
        assert set(served_checkpoints(store, layout)) == {"llm-tiny"}
        env = build_environment(store, layout, 2)
    assert isinstance(env.compute, TorchCompute) and env.compute.served_checkpoints["llm-tiny"]
    prompt = "The Python standard library"
    trained_output = env.compute.generate("llm-tiny", "", "honest", [prompt], 12)[0].tokens
    genesis_output = TorchCompute(env.params.sprint.model, env.prev_hash).generate("llm-tiny", "", "honest", [prompt], 12)[0].tokens
    assert trained_output != genesis_output, "the trained checkpoint, not the genesis weights, answers"
    submitter(3, "dev-ada", start_nonce=1)
    with opened(layout) as store:
        run_stages(store, layout, 2)
        outcomes = dict(store._query("SELECT outcome, count(*) FROM task_outcomes WHERE epoch = 2 GROUP BY 1"))
        assert "invalidated" not in outcomes, "validators re-run the same served version: honest work passes"
        assert verify_chain(store).first_problem is None
