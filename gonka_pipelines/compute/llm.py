"""Inference tasks on an `llm` profile: a byte-level tokenizer, greedy generation, and forced re-scoring.

An executor answers with `generate_greedy` (tokens plus top-5 log-probs per position); a validator
re-runs the prompt with the executor's tokens through `score_forced` and compares the log-probs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import torch

from gonka_pipelines.compute.runner import ModelRunner

BYTE_IDS = 256  # token ids 0..255 are the UTF-8 bytes themselves
BOS, EOS, PAD = BYTE_IDS, BYTE_IDS + 1, BYTE_IDS + 2
TOKENIZER_VOCAB = PAD + 1  # an llm profile's vocab must hold at least these ids
TOP_K = 5  # log-probs reported per position (PROTOCOL.md section 4)

TOP_ROWS = [("top_ids", pa.list_(pa.list_(pa.int64()))), ("top_logprobs", pa.list_(pa.list_(pa.float64())))]
GENERATION_SCHEMA = pa.schema([("tokens", pa.list_(pa.int64())), *TOP_ROWS])
"""What an engine's generate returns: one row per prompt, in prompt order, with the top-k of every output position."""
SCORE_SCHEMA = pa.schema(TOP_ROWS)
"""What an engine's score returns: one row per forced output, in order, with the re-run's top-k at each position."""


def encode(text: str, add_bos: bool = True) -> list[int]:
    """UTF-8 bytes of the text as token ids, after BOS unless add_bos is False."""
    return ([BOS] if add_bos else []) + list(text.encode())


def decode(tokens: Sequence[int]) -> str:
    """Text of the byte tokens; special ids are dropped and invalid UTF-8 is replaced, never raised."""
    return bytes(t for t in tokens if t < BYTE_IDS).decode(errors="replace")


@dataclass(frozen=True)
class Generation:
    """Output tokens and, per output position, the top-5 token ids and their log-probabilities."""

    tokens: list[int]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


def generations_table(generations: Sequence[Generation]) -> pa.Table:
    """Generations as one GENERATION_SCHEMA batch (the engines' columnar answer)."""
    return pa.table([[g.tokens for g in generations], [g.top_ids for g in generations],
                     [g.top_logprobs for g in generations]], schema=GENERATION_SCHEMA)


def scores_table(scores: Sequence[tuple[list[list[int]], list[list[float]]]]) -> pa.Table:
    """Forced re-runs' (top ids, top log-probs) as one SCORE_SCHEMA batch."""
    return pa.table([[ids for ids, _ in scores], [logprobs for _, logprobs in scores]], schema=SCORE_SCHEMA)


def _check_ids(tokens: Sequence[int], vocab: int, what: str) -> None:
    """Refuse ids the embedding cannot look up (an executor's output is untrusted input)."""
    if not all(0 <= t < vocab for t in tokens):
        raise ValueError(f"{what} token ids must lie in [0, {vocab})")


def _check_request(runner: ModelRunner, prompt: Sequence[int], completion_tokens: int) -> None:
    """Raise ValueError unless the runner is a language model and prompt + completion fit its context."""
    profile = runner.profile
    if profile.kind != "llm" or profile.vocab < TOKENIZER_VOCAB:
        raise ValueError(f"{profile.name}: not a language model with a byte vocabulary of {TOKENIZER_VOCAB} ids")
    if not prompt:
        raise ValueError("prompt must hold at least one token (encode() starts it with BOS)")
    _check_ids(prompt, profile.vocab, "prompt")
    if len(prompt) + completion_tokens > profile.seq_len:
        raise ValueError(
            f"{profile.name}: prompt of {len(prompt)} tokens plus {completion_tokens} output tokens exceeds "
            f"the context of {profile.seq_len} tokens"
        )


def _top_logprobs(logits: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Top-5 ids and log-probs of each row of (N, vocab) logits, best first."""
    values, ids = torch.log_softmax(logits, dim=-1).topk(TOP_K, dim=-1)
    return ids.tolist(), values.tolist()


def generate_greedy(runner: ModelRunner, prompts: list[list[int]], max_tokens: int) -> list[Generation]:
    """Greedy completions of all prompts in one batch, each stopping after EOS or max_tokens tokens.

    Prompts of different lengths share a right-padded batch: causal attention keeps padding after a
    sequence's end from affecting it. Every step re-runs the whole context (no KV cache), exactly the
    computation `score_forced` repeats.
    """
    for prompt in prompts:
        _check_request(runner, prompt, max_tokens)
    lengths = [len(p) for p in prompts]
    context = torch.full((len(prompts), max(lengths, default=0) + max_tokens), PAD, dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        context[row, : len(prompt)] = torch.tensor(prompt)
    results = [Generation([], [], []) for _ in prompts]
    active = list(range(len(prompts))) if max_tokens > 0 else []
    while active:
        logits = runner.logits(context[active, : max(lengths[row] for row in active)])
        last = torch.tensor([lengths[row] - 1 for row in active], device=logits.device)
        top_ids, top_logprobs = _top_logprobs(logits[torch.arange(len(active), device=logits.device), last])
        still_active = []
        for row, ids, logprobs in zip(active, top_ids, top_logprobs, strict=True):
            token = ids[0]
            results[row].tokens.append(token)
            results[row].top_ids.append(ids)
            results[row].top_logprobs.append(logprobs)
            context[row, lengths[row]] = token
            lengths[row] += 1
            if token != EOS and len(results[row].tokens) < max_tokens:
                still_active.append(row)
        active = still_active
    return results


def score_forced(
    runner: ModelRunner, prompt: list[int], output_tokens: list[int]
) -> tuple[list[list[int]], list[list[float]]]:
    """Top-5 ids and log-probs at every output position, with the given output forced, in one forward pass."""
    _check_request(runner, prompt, len(output_tokens))
    _check_ids(output_tokens, runner.profile.vocab, "output")
    if not output_tokens:
        return [], []
    sequence = torch.tensor([prompt + output_tokens[:-1]], dtype=torch.int64)
    logits = runner.logits(sequence)[0, len(prompt) - 1 :]
    return _top_logprobs(logits)
