"""The compute seam's columnar answers: re-runs come back in the order of the results they judge, whatever the model
versions' interleaving, and an answer of the wrong shape is refused with what was wrong."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pytest

from gonka_pipelines.compute.llm import GENERATION_SCHEMA, SCORE_SCHEMA
from gonka_pipelines.stages.environment import EpochEnvironment
from gonka_pipelines.stages.inference import SCORED_PER_ORDER, GenerationOrder, _rescore, generate_tasks


class EchoCompute:
    """score answers, at each position of an output, one row [version number, output token, prompt length]."""

    def __init__(self) -> None:
        self.orders: list[tuple[str, str, int]] = []

    def score(self, model: str, version: str, prompts: list[str], outputs: list[list[int]]) -> pa.Table:
        self.orders.append((model, version, len(prompts)))
        ids = [[[int(version[1:]), token, len(prompt)] for token in output] for prompt, output in zip(prompts, outputs)]
        return pa.table([ids, [[[0.0] * 3 for _ in row] for row in ids]], schema=SCORE_SCHEMA)


@dataclass
class LocalEnv:
    """What _rescore asks of an epoch environment: versions, and an engine that runs each order here."""

    compute: EchoCompute
    served = {"a": "v9", "b": "v9"}
    with_runs_version = EpochEnvironment.with_runs_version

    def on_hosts(self, work, items):
        return [work(self.compute, item) for item in items]


def test_rescored_rows_follow_the_results_order_across_interleaved_versions():
    rows = 2 * SCORED_PER_ORDER + 5
    wanted = pl.DataFrame({"model": ["a" if i % 3 else "b" for i in range(rows)],
                           "version": ["v1" if i % 2 else "" for i in range(rows)],
                           "prompt": ["x" * (i % 7) for i in range(rows)],
                           "output_tokens": [[i, i + 1][: 1 + i % 2] for i in range(rows)]})
    env = LocalEnv(EchoCompute())
    rescored = _rescore(env, wanted).to_dicts()  # type: ignore[arg-type]
    for i, row in enumerate(rescored):
        version = 1 if i % 2 else 9
        assert row["top_ids"] == [[version, token, i % 7] for token in [i, i + 1][: 1 + i % 2]], i
    assert all(size <= SCORED_PER_ORDER for _, _, size in env.compute.orders)
    assert sorted({(m, v) for m, v, _ in env.compute.orders}) == [("a", "v1"), ("a", "v9"), ("b", "v1"), ("b", "v9")]
    assert sum(size for _, _, size in env.compute.orders) == rows
    assert _rescore(env, wanted.clear()).height == 0  # type: ignore[arg-type]


class WrongAnswers:
    def __init__(self, table: pa.Table):
        self.table = table

    def generate(self, *args) -> pa.Table:
        return self.table


@pytest.mark.parametrize("table, wrong", [
    (GENERATION_SCHEMA.empty_table(), "returned 0 rows"),
    (pa.table({"tokens": [[1]]}), "returned 1 rows of tokens: list<item: int64>"),
])
def test_an_engine_answer_of_the_wrong_shape_is_refused(table, wrong):
    order = GenerationOrder("llm-tiny", "v", "host", "honest", ("a prompt",), 4)
    with pytest.raises(ValueError, match=wrong) as error:
        generate_tasks(WrongAnswers(table), order)  # type: ignore[arg-type]
    assert "for 1 requests" in str(error.value) and "top_logprobs" in str(error.value)


def test_a_task_asking_for_the_served_version_of_a_model_served_in_none_is_refused_by_name():
    wanted = pl.DataFrame({"model": ["a", "c", "d"], "version": ["", "", "v1"], "prompt": ["x"] * 3, "output_tokens": [[1]] * 3})
    with pytest.raises(ValueError, match="served version of 'c', which no version serves"):
        _rescore(LocalEnv(EchoCompute()), wanted)  # type: ignore[arg-type]
