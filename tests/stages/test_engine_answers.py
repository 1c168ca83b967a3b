"""The compute seam's columnar answers: re-runs come back in the order of the results they judge, whatever the model
versions' interleaving, and an answer of the wrong shape is refused with what was wrong."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pytest

from gonka_pipelines.compute.llm import GENERATION_SCHEMA, SCORE_SCHEMA
from gonka_pipelines.stages import environment
from gonka_pipelines.stages.environment import EpochEnvironment
from gonka_pipelines.stages.inference import SCORED_PER_ORDER, GenerationOrder, _rescore, generate_tasks


class EchoCompute:
    """score answers, at each position of an output, one row [version number, output token, prompt length]."""

    def __init__(self) -> None:
        self.orders: list[tuple[str, str, int]] = []

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        self.orders.append((model, version, len(prompts)))
        ids = [[[int(version[1:]), token, len(prompt)] for token in output]
               for prompt, output in zip(prompts.to_pylist(), outputs.to_pylist(), strict=True)]
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


def test_many_reruns_go_in_at_most_scoring_orders_work_items_of_equal_size(monkeypatch):
    """Past WORK_ITEMS x SCORED_PER_ORDER re-runs an order grows instead of their number (a million re-runs in
    a thousand orders, not 30,000), and the rows still come back in order."""
    monkeypatch.setattr(environment, "WORK_ITEMS", 4)
    rows = 5 * SCORED_PER_ORDER + 3
    wanted = pl.DataFrame({"model": ["a"] * rows, "version": ["v1"] * rows, "prompt": ["x" * (i % 5) for i in range(rows)],
                           "output_tokens": [[i] for i in range(rows)]})
    env = LocalEnv(EchoCompute())
    rescored = _rescore(env, wanted)  # type: ignore[arg-type]
    assert [size for _, _, size in env.compute.orders] == [41, 41, 41, 40]  # ceil(163 / 4)
    assert rescored["top_ids"].to_list() == [[[1, i, i % 5]] for i in range(rows)]


class KeepingOrders(EchoCompute):
    """EchoCompute that keeps the columns each order brought."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[tuple[pa.Array, pa.Array]] = []

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        self.columns.append((prompts, outputs))
        return super().score(model, version, prompts, outputs)


def test_a_rerun_order_carries_only_its_own_rows():
    """An order's columns are copies of its rows: a slice of the frame's column would pickle (to a cluster's worker)
    with every re-run's prompt and tokens."""
    rows = 4 * SCORED_PER_ORDER
    wanted = pl.DataFrame({"model": ["a"] * rows, "version": ["v1"] * rows, "prompt": [f"{i:03d}" * 40 for i in range(rows)],
                           "output_tokens": [[i] * 16 for i in range(rows)]})
    compute = KeepingOrders()
    _rescore(LocalEnv(compute), wanted)  # type: ignore[arg-type]
    whole = [len(pickle.dumps(wanted[name].to_arrow())) for name in ("prompt", "output_tokens")]
    assert len(compute.columns) == 4
    for start, columns in zip(range(0, rows, SCORED_PER_ORDER), compute.columns):
        assert columns[0].to_pylist() == wanted["prompt"][start:start + SCORED_PER_ORDER].to_list()
        assert all(len(pickle.dumps(column)) < size / 2 for column, size in zip(columns, whole)), "an order pickles a quarter"


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


class ShortReruns(EchoCompute):
    """EchoCompute whose re-runs of prompts starting with 'short' come back one position short."""

    eos_token = 0

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        shortened = [o[:-1] if p.startswith("short") else o for p, o in zip(prompts.to_pylist(), outputs.to_pylist())]
        return super().score(model, version, prompts, pa.array(shortened, outputs.type))


@dataclass
class JudgingEnv(LocalEnv):
    """LocalEnv with the shipped rule set, as _honest_judgments asks."""

    rules: object = None


def test_outputs_judged_unseen_or_rerun_at_another_length_fail_as_length_differs():
    """An output cut short of EOS and max_tokens fails unseen (never re-run); a re-run of another length fails as
    LENGTH_DIFFERS; every other output gets the verdict it gets when judged alone, in task id order."""
    from gonka_pipelines.local.config import load_genesis
    from gonka_pipelines.protocol.rules import rules_for
    from gonka_pipelines.stages.environment import epoch_parameters
    from gonka_pipelines.stages.inference import _honest_judgments

    rules = rules_for(epoch_parameters(load_genesis(), 1))
    rows = 12
    kind = ["unseen" if i % 4 == 1 else "short" if i % 4 == 2 else "whole" for i in range(rows)]
    checked = pl.DataFrame({
        "task_id": [f"t{i:02d}" for i in range(rows)][::-1],
        "output_tokens": [[5, 6, 7] if k == "unseen" else [5, 6, 0] for k in kind],  # 'unseen' stops short of EOS
        "top_ids": [[[i, 5, 3], [i, 6, 3], [i, 0, 3]] for i in range(rows)],
        "top_logprobs": [[[0.0] * 3] * 3 for _ in range(rows)],
        "prompt": [f"{k}-{i}" for i, k in enumerate(kind)], "model": ["a"] * rows, "version": ["v1"] * rows,
        "max_tokens": [8] * rows})
    env = JudgingEnv(ShortReruns(), rules)
    judged = _honest_judgments(env, checked)  # type: ignore[arg-type]
    assert judged["task_id"].to_list() == sorted(checked["task_id"])
    by_task = {row["task_id"]: row for row in judged.to_dicts()}
    for task_id, k in zip(checked["task_id"], kind):
        if k != "whole":
            assert (by_task[task_id]["passed"], by_task[task_id]["similarity"], by_task[task_id]["reason"]) == (
                False, 0.0, "length_differs"), (task_id, k)
        else:
            assert (by_task[task_id]["passed"], by_task[task_id]["reason"]) == (True, "similar"), (task_id, k)
    whole = checked.filter(pl.Series([k == "whole" for k in kind]))
    alone = _honest_judgments(JudgingEnv(ShortReruns(), rules), whole)  # type: ignore[arg-type]
    assert alone.to_dicts() == [by_task[task_id] for task_id in alone["task_id"]]
    assert sum(size for _, _, size in env.compute.orders) == rows - kind.count("unseen"), "unseen outputs are not re-run"


WHOLE_ROWS = [[1, 5, 3], [1, 6, 3], [1, 0, 3]]
"""An executor's top-3 at each of the three positions of the output [5, 6, 0] (EOS last)."""


@pytest.mark.parametrize(("top_ids", "other", "wrong"), [
    ([[1, 5, 3], [1, 6], [1, 0, 3]], WHOLE_ROWS, "executors' top-k rows differ in width among tasks t00"),
    ([[1, 5, 3], [1, 6, 3]], WHOLE_ROWS, "executors' top-k rows are not 3 per output among tasks t00"),
    ([[1, 5, 3], [1, 6, 3]], WHOLE_ROWS + [[1, 0, 3]], "executors' top-k rows are not 3 per output among tasks t00"),
    ([[1, 5, 3], [], [1, 0, 3]], WHOLE_ROWS, "executors' top-k rows differ in width among tasks t00"),
    ([], WHOLE_ROWS, "executors' top-k rows are not 3 per output among tasks t00"),
    ([[1, 5, 3], None, [1, 0, 3]], WHOLE_ROWS, "executors' top-k rows hold nulls among tasks t00"),
])
def test_top_k_rows_that_do_not_fit_their_output_are_refused_naming_the_batch(top_ids, other, wrong):
    """Top-k rows are read as one array per batch of outputs of one length: rows of another width (an empty one too),
    fewer rows than tokens (even where another output's extra rows make up the total), or a null row are refused
    with the first task of the batch, not reshaped into other outputs' values."""
    from gonka_pipelines.local.config import load_genesis
    from gonka_pipelines.protocol.rules import rules_for
    from gonka_pipelines.stages.environment import epoch_parameters
    from gonka_pipelines.stages.inference import _honest_judgments

    checked = pl.DataFrame({
        "task_id": ["t00", "t01"], "output_tokens": [[5, 6, 0]] * 2, "top_ids": [top_ids, other],
        "top_logprobs": [[[0.0] * 3] * 3] * 2, "prompt": ["p0", "p1"], "model": ["a"] * 2, "version": ["v1"] * 2,
        "max_tokens": [8] * 2})
    env = JudgingEnv(ShortReruns(), rules_for(epoch_parameters(load_genesis(), 1)))
    with pytest.raises(ValueError, match=wrong):
        _honest_judgments(env, checked)  # type: ignore[arg-type]
    assert _honest_judgments(env, checked.with_columns(pl.Series("top_ids", [WHOLE_ROWS] * 2)))["passed"].to_list() == [True, True]  # type: ignore[arg-type]


def test_outputs_whose_chunks_do_not_line_up_are_judged_as_in_one_chunk():
    """Verdicts are judged in pieces where the chunks of the outputs' and the re-runs' columns line up (each piece read
    in place): columns cut at different rows give the same verdicts and similarities as one chunk."""
    from gonka_pipelines.local.config import load_genesis
    from gonka_pipelines.protocol.rules import rules_for
    from gonka_pipelines.stages.environment import epoch_parameters
    from gonka_pipelines.stages.inference import _honest_judgments

    rows = 70
    prompts = [f"short-{i}" if i % 6 == 0 else f"prompt-{i}" for i in range(rows)]  # a sixth re-run one position short
    top_ids = [[[1, token, len(prompt) if i % 3 else 99] for token in (5, 6, 0)] for i, prompt in enumerate(prompts)]
    top_logprobs = [[[-0.5 * (i % 5), -0.1 * (i % 4), 0.0]] * 3 for i in range(rows)]
    columns = {"task_id": [f"t{i:02d}" for i in range(rows)], "output_tokens": [[5, 6, 0]] * rows, "top_ids": top_ids,
               "top_logprobs": top_logprobs, "prompt": prompts, "model": ["a"] * rows, "version": ["v1"] * rows,
               "max_tokens": [8] * rows}
    whole = pl.DataFrame(columns)
    cuts = {"output_tokens": [9, 40], "top_ids": [3, 50, 51], "top_logprobs": [20]}
    chunked = pl.from_arrow(pa.table({name: pa.chunked_array([pa.array(values[low:high], whole[name].to_arrow().type)
                                                               for low, high in zip([0, *cuts.get(name, [])], [*cuts.get(name, []), rows])])
                                      for name, values in columns.items()}), rechunk=False)
    assert isinstance(chunked, pl.DataFrame) and chunked["top_ids"].n_chunks() == 7  # polars cuts every column at every cut
    rules = rules_for(epoch_parameters(load_genesis(), 1))
    judged = _honest_judgments(JudgingEnv(ShortReruns(), rules), chunked)  # type: ignore[arg-type]
    assert judged.to_dicts() == _honest_judgments(JudgingEnv(ShortReruns(), rules), whole).to_dicts()  # type: ignore[arg-type]
    assert 0 < judged["passed"].sum() < rows and judged["similarity"].n_unique() > 2
