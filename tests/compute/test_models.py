"""Model profiles, the seeded decoder, the runner, and LLM generation / forced re-scoring."""

from __future__ import annotations

import logging
import resource
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import yaml

from gonka_pipelines.compute import llm
from gonka_pipelines.compute.decoder import INIT_STD, build_seeded_decoder
from gonka_pipelines.compute.profiles import (
    list_profiles,
    load_profile,
    profile_from_dict,
)
from gonka_pipelines.compute.runner import ModelRunner, keep_freed_memory, reproducible_threads

TINY = load_profile("poc-tiny")
LLM = load_profile("llm-tiny")


@pytest.fixture(scope="module")
def llm_runner() -> ModelRunner:
    return ModelRunner(LLM, b"llm-weights", device="cpu")


def write_profile(directory: Path, stem: str, **changes: object) -> None:
    fields = {**asdict(TINY), "name": stem, **changes}
    (directory / f"{stem}.yaml").write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not None}))


# --- profiles -----------------------------------------------------------------------------------


def test_shipped_profiles_all_load() -> None:
    names = list_profiles()
    assert {"poc-tiny", "poc-small", "poc-testnet", "poc-mainnet", "llm-tiny"} <= set(names)
    assert all(load_profile(name).name == name for name in names)


def test_mainnet_profile_has_gonka_figures() -> None:
    mainnet = load_profile("poc-mainnet")
    assert (mainnet.dim, mainnet.n_layers, mainnet.n_heads, mainnet.vocab, mainnet.ffn_hidden, mainnet.seq_len) == (
        1792, 64, 64, 8196, 49152, 256,
    )
    assert mainnet.dtype == "float16" and mainnet.kind == "poc"
    testnet = load_profile("poc-testnet")
    assert (testnet.dim, testnet.n_layers, testnet.seq_len) == (1024, 32, 128)


def test_llm_profile_fits_the_byte_tokenizer() -> None:
    assert LLM.kind == "llm" and LLM.vocab >= llm.TOKENIZER_VOCAB


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": -3}, "bad.yaml: field 'dim' must be a positive integer, got -3"),
        ({"n_layers": 2.5}, "bad.yaml: field 'n_layers' must be a positive integer, got 2.5"),
        ({"batch_size": True}, "bad.yaml: field 'batch_size' must be a positive integer, got True"),
        ({"dtype": "int8"}, "bad.yaml: field 'dtype' must be one of float32, float16, bfloat16, got 'int8'"),
        ({"kind": "vision"}, "bad.yaml: field 'kind' must be one of poc, llm, got 'vision'"),
        ({"norm_eps": 0}, "bad.yaml: field 'norm_eps' must be a positive number, got 0"),
        ({"n_heads": 5}, "bad.yaml: field 'n_heads' must split dim 64 into even head sizes, got 5"),
        ({"vocab": None}, "bad.yaml: field 'vocab' is missing"),
        ({"colour": "red"}, "bad.yaml: field 'colour' is not a profile field"),
        ({"name": "other"}, "bad.yaml: field 'name' must match the file name 'bad', got 'other'"),
    ],
)
def test_bad_profile_field_names_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    write_profile(tmp_path, "bad", **changes)
    with pytest.raises(ValueError) as error:
        load_profile("bad", tmp_path)
    assert str(error.value).startswith(message)


def test_unreadable_profile_files_raise_value_error(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("dim: [1,\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a mapping"):
        load_profile("list", tmp_path)
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_profile("broken", tmp_path)
    with pytest.raises(ValueError, match=r"missing.yaml: no such model profile .*known: broken, list"):
        load_profile("missing", tmp_path)


def test_optional_fields_take_defaults_and_floats_are_normalised() -> None:
    data = {k: v for k, v in asdict(TINY).items() if k not in ("name", "rope_theta", "norm_eps")}
    profile = profile_from_dict("x", {**data, "rope_theta": 500000})
    assert profile.rope_theta == 500000.0 and isinstance(profile.rope_theta, float)
    assert profile.norm_eps == 1e-5 and profile.head_dim == 16


# --- seeded decoder -----------------------------------------------------------------------------


def test_seeded_weights_are_bit_identical_on_rebuild_and_differ_by_seed() -> None:
    first = build_seeded_decoder(TINY, b"block-1").state_dict()
    again = build_seeded_decoder(TINY, b"block-1").state_dict()
    other = build_seeded_decoder(TINY, b"block-2").state_dict()
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["layers.0.attention.wq.weight"], other["layers.0.attention.wq.weight"])


def test_seeded_weights_are_normal_002_with_unit_norm_gains() -> None:
    params = dict(build_seeded_decoder(TINY, b"seed").named_parameters())
    gains = [name for name in params if name.endswith("norm.weight")]
    assert len(gains) == 2 * TINY.n_layers + 1
    assert all(bool((params[name] == 1).all()) for name in gains)
    weights = torch.cat([p.flatten() for name, p in params.items() if name not in gains])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(INIT_STD, rel=0.01)


def test_poc_decoder_is_causal_and_last_only_matches_full_logits() -> None:
    model = build_seeded_decoder(TINY, b"seed")
    x = torch.randn(3, TINY.seq_len, TINY.dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        changed = x.clone()
        changed[:, -1] += 1.0
        later_changed = model(changed)
        assert full.shape == (3, TINY.seq_len, TINY.vocab)
        assert torch.allclose(model(x, last_only=True), full[:, -1], atol=1e-6)
    assert torch.equal(full[:, :-1], later_changed[:, :-1])
    assert not torch.equal(full[:, -1], later_changed[:, -1])


def test_decoder_rejects_inputs_longer_than_seq_len() -> None:
    model = build_seeded_decoder(TINY, b"seed")
    with pytest.raises(ValueError, match="exceeds seq_len 16"):
        model(torch.zeros(1, TINY.seq_len + 1, TINY.dim))


# --- runner -------------------------------------------------------------------------------------


def test_runner_falls_back_to_float32_on_cpu_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    half = replace(TINY, name="tiny-fp16", dtype="float16")
    with caplog.at_level(logging.INFO, logger="gonka_pipelines.compute.runner"):
        runner = ModelRunner(half, b"seed", device="cpu")
    assert runner.device.type == "cpu" and runner.dtype == torch.float32
    assert "float16 is not used on CPU" in caplog.text
    assert next(runner.model.parameters()).dtype == torch.float32


def test_runner_returns_float32_logits_without_autograd() -> None:
    runner = ModelRunner(TINY, b"seed", device="cpu")
    logits = runner.last_logits(torch.randn(2, TINY.seq_len, TINY.dim, dtype=torch.float64))
    assert logits.shape == (2, TINY.vocab) and logits.dtype == torch.float32 and not logits.requires_grad


# --- llm ----------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_text_and_drops_specials() -> None:
    text = "Proof of compute — ¿qué? 計算"
    tokens = llm.encode(text)
    assert tokens[0] == llm.BOS and max(tokens[1:]) < llm.BYTE_IDS
    assert llm.decode([*tokens, llm.EOS, llm.PAD]) == text
    assert llm.encode("ab", add_bos=False) == [97, 98]


def test_forced_scoring_reproduces_greedy_generation(llm_runner: ModelRunner) -> None:
    prompts = [llm.encode("Hello"), llm.encode("What is the capital of France?"), llm.encode("")]
    generations = llm.generate_greedy(llm_runner, prompts, max_tokens=24)
    for prompt, generation in zip(prompts, generations, strict=True):
        assert len(generation.tokens) == len(generation.top_ids) == len(generation.top_logprobs) == 24
        assert [ids[0] for ids in generation.top_ids] == generation.tokens
        top_ids, top_logprobs = llm.score_forced(llm_runner, prompt, generation.tokens)
        assert top_ids == generation.top_ids
        assert all(len(row) == llm.TOP_K for row in top_logprobs)
        forced, generated = torch.tensor(top_logprobs), torch.tensor(generation.top_logprobs)
        assert torch.allclose(forced, generated, rtol=0, atol=1e-5)
        assert all(row == sorted(row, reverse=True) and row[0] < 0 for row in top_logprobs)


def test_batched_generation_equals_one_prompt_at_a_time(llm_runner: ModelRunner) -> None:
    prompts = [llm.encode("a"), llm.encode("a much longer prompt")]
    batched = llm.generate_greedy(llm_runner, prompts, max_tokens=8)
    alone = [llm.generate_greedy(llm_runner, [prompt], max_tokens=8)[0] for prompt in prompts]
    assert [g.tokens for g in batched] == [g.tokens for g in alone]


def test_model_from_another_seed_answers_differently(llm_runner: ModelRunner) -> None:
    garbled = ModelRunner(LLM, b"another-seed", device="cpu")
    prompt = llm.encode("Tell me a story")
    honest = llm.generate_greedy(llm_runner, [prompt], max_tokens=16)[0]
    other = llm.generate_greedy(garbled, [prompt], max_tokens=16)[0]
    assert honest.tokens != other.tokens
    assert llm.score_forced(llm_runner, prompt, other.tokens)[0] != other.top_ids


def test_generation_stops_after_eos() -> None:
    runner = ModelRunner(LLM, b"eos", device="cpu")
    eos_head = torch.nn.Linear(LLM.dim, LLM.vocab)  # an output head that always prefers EOS
    with torch.no_grad():
        eos_head.weight.zero_()
        eos_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(llm.EOS), LLM.vocab))
    runner.model.output = eos_head
    generation = llm.generate_greedy(runner, [llm.encode("hi")], max_tokens=10)[0]
    assert generation.tokens == [llm.EOS] and len(generation.top_ids) == 1


def test_context_longer_than_seq_len_is_refused(llm_runner: ModelRunner) -> None:
    prompt = [llm.BOS] * (LLM.seq_len - 4)
    assert len(llm.generate_greedy(llm_runner, [prompt], max_tokens=4)[0].tokens) == 4
    with pytest.raises(ValueError, match="exceeds the context of 256 tokens"):
        llm.generate_greedy(llm_runner, [prompt], max_tokens=5)
    with pytest.raises(ValueError, match="exceeds the context"):
        llm.score_forced(llm_runner, prompt, [1] * 5)


def test_bad_requests_are_refused(llm_runner: ModelRunner) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        llm.generate_greedy(llm_runner, [[]], max_tokens=1)
    with pytest.raises(ValueError, match=r"prompt token ids must lie in \[0, 260\)"):
        llm.generate_greedy(llm_runner, [[999]], max_tokens=1)
    with pytest.raises(ValueError, match="output token ids"):
        llm.score_forced(llm_runner, [llm.BOS], [-1])
    with pytest.raises(ValueError, match="not a language model"):
        llm.generate_greedy(ModelRunner(TINY, b"seed", device="cpu"), [[1]], max_tokens=1)
    assert llm.generate_greedy(llm_runner, [[llm.BOS]], max_tokens=0)[0].tokens == []
    assert llm.score_forced(llm_runner, [llm.BOS], []) == ([], [])


def test_forward_passes_reuse_freed_memory_instead_of_faulting_it_in_again():
    """glibc would hand each pass's activations back to the kernel and fault them in on the next pass (about 2,000
    minor page faults per poc-tiny batch of 128 before keep_freed_memory); kept, passes after the first fault almost
    none (late in a full test run a fragmented heap still faults a few dozen pages a pass: 56 once, so the bound is 200,
    ten times below the unkept figure)."""
    runner = ModelRunner(load_profile("poc-tiny"), b"\x01" * 32, "cpu")
    assert keep_freed_memory()  # glibc: the tests run on Linux
    inputs = torch.randn(128, 16, 64)
    with reproducible_threads(runner.device):
        runner.last_logits(inputs)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            runner.last_logits(inputs)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults / 20 < 200, f"{faults / 20:.0f} page faults per pass"
