"""Does inference validation separate the served model from other models once the served model is trained?

    .venv/bin/python bench/study_similarity.py [--steps 64] [--batch 16] [--prompts 40] [--max-tokens 16]

Trains through the project's path (compute/training.py), same steps each: llm-tiny's served version on training shards
0-2, an llm-tiny rival on shards 3-5, and a smaller model (dim 32, 1 layer, 2 heads: the cheapest impostor) on shards
0-2. The served version answers --prompts prompts (the first half of lines of resources/corpus.txt, as the demo
workload asks) greedily with top-5 log-probs, as an honest executor; then each candidate validator model re-runs every
answer forcing its tokens and the local profile's judge compares (PROTOCOL section 4, Comparison): the served version
itself (an honest validator), the genesis random weights, the rival and the small model. Printed per validator model:
judge pass rate; the log-prob similarity alone, over Gonka's max(100, positions) and over the answer's real positions
(median, range, count above the threshold); and the answers where the validator model's own greedy choice matches every
token.
The figures are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.llm import EOS, Generation, encode, generate_greedy, score_forced
from gonka_pipelines.compute.profiles import ModelProfile, cheaper_profile, load_profile
from gonka_pipelines.compute.runner import ModelRunner, reproducible_threads, served_model_seed
from gonka_pipelines.compute.training import TrainingSpec, evaluate, restore, train
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.local.corpus import eval_bytes, manifest, training_bytes
from gonka_pipelines.protocol.inference_validation import similarity
from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.rules import RuleSet, rules_for
from gonka_pipelines.simulation.workload import corpus_prompts

MODEL = "llm-tiny"
GONKA_FLOOR = load_genesis("mainnet").validation.min_normalising_positions
"""Gonka's normalisation floor (100): the distance divides by max(100, positions), whatever the local profile says."""


def runner_of(checkpoint: bytes | None) -> ModelRunner:
    """What a host serving `checkpoint` as the model's version runs (None: the genesis weights), as the epoch builds it."""
    if checkpoint is None:
        return TorchCompute(load_genesis().sprint.model, "00" * 32, "cpu").served(MODEL)
    return TorchCompute(load_genesis().sprint.model, "00" * 32, "cpu", lambda version: checkpoint).served(MODEL, "trained")


def small_runner(profile: ModelProfile, seed: bytes, checkpoint: bytes) -> ModelRunner:
    """A trained checkpoint of a profile that has no file (TorchCompute serves only resources/models), on CPU."""
    decoder, _, _ = restore(profile, checkpoint, seed, 1e-3, torch.device("cpu"), weights_only=True)
    return ModelRunner(profile, seed, "cpu", decoder=decoder)


def summary(similarities: Sequence[float], threshold: float) -> str:
    """Median, range and count above the threshold of one similarity column."""
    above = sum(s > threshold for s in similarities)
    return (f"{statistics.median(similarities):>8.4f}{f'{min(similarities):.4f} .. {max(similarities):.4f}':>18}"
            f"{f'{above}/{len(similarities)}':>8}")


def compare(validator: ModelRunner, rules: RuleSet, prompt: str, answer: Generation, max_tokens: int) -> tuple[bool, float, float, bool]:
    """One answer re-run by a validator model: the judge's verdict, the log-prob similarity alone (Gonka's comparison,
    which does not check the tokens) over max(floor, positions) and over the positions, and whether its greedy tokens match."""
    validation = rules.params.validation
    forced = score_forced(validator, encode(prompt), answer.tokens)
    passed = rules.judge(answer.tokens, max_tokens, EOS, (answer.top_ids, answer.top_logprobs), rescore=lambda: forced).passed
    floored, unfloored = (similarity(forced[0], forced[1], answer.top_ids, answer.top_logprobs, epsilon=validation.logprob_epsilon,
                                     min_positions=min_positions) for min_positions in (GONKA_FLOOR, 1))
    same_tokens = generate_greedy(validator, [encode(prompt)], max_tokens)[0].tokens == answer.tokens
    return passed, floored, unfloored, same_tokens


def row(validator: ModelRunner, rules: RuleSet, prompts: list[str], answers: list[Generation], max_tokens: int) -> str:
    """One validator model's judge pass rate, log-prob similarities (Gonka's floor, real positions) and same tokens."""
    passed, floored, unfloored, same_tokens = zip(*(compare(validator, rules, p, a, max_tokens) for p, a in zip(prompts, answers)))
    threshold = rules.params.validation.similarity_threshold
    return (f"{sum(passed) / len(passed):>6.0%}{summary(floored, threshold)}{summary(unfloored, threshold)}"
            f"{sum(same_tokens):>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    profile, seed = load_profile(MODEL), served_model_seed(MODEL)
    small = cheaper_profile(profile)
    small_seed = served_model_seed(small.name)
    train_shards = [s.hash for s in manifest() if s.role == "train"]
    spec = TrainingSpec(args.steps, args.batch, 3e-3, 1, args.steps)
    started = time.perf_counter()
    served = train(profile, seed, None, training_bytes(train_shards[:3]), spec, device="cpu").checkpoints[-1][2]
    rival = train(profile, seed, None, training_bytes(train_shards[3:]), spec, device="cpu").checkpoints[-1][2]
    small_version = train(small, small_seed, None, training_bytes(train_shards[:3]), spec, device="cpu").checkpoints[-1][2]
    held_out = eval_bytes()
    print(f"trained 3 x {args.steps} steps x {args.batch} windows in {time.perf_counter() - started:.0f}s; held-out loss: "
          f"genesis {evaluate(profile, seed, None, held_out, 64, 0, 'cpu'):.3f}, "
          f"served {evaluate(profile, seed, served, held_out, 64, 0, 'cpu'):.3f}, "
          f"rival {evaluate(profile, seed, rival, held_out, 64, 0, 'cpu'):.3f}, "
          f"small {evaluate(small, small_seed, small_version, held_out, 64, 0, 'cpu'):.3f}")
    rules = rules_for(EpochParams.derive(load_genesis(), 1, 1.0))
    validation = rules.params.validation
    executor = runner_of(served)
    validators = {"served (honest re-run)": executor, "genesis random weights": runner_of(None),
                  "rival (other shards)": runner_of(rival), "small (dim 32, 1 layer)": small_runner(small, small_seed, small_version)}
    prompts = corpus_prompts()[: args.prompts]
    print(f"{len(prompts)} prompts, {args.max_tokens} tokens each; threshold {validation.similarity_threshold}; the judge "
          f"divides by max({validation.min_normalising_positions}, n) (local profile)")
    print(f"{'':32}{f'log-prob only, / max({GONKA_FLOOR}, n)':^34}{'log-prob only, / n':^34}".rstrip())
    columns = f"{'median':>8}{'range':>18}{f'> {validation.similarity_threshold}':>8}"
    print(f"{'validator model':26}{'judge':>6}{columns}{columns}{'same':>8}")
    with reproducible_threads(executor.device):
        answers = [generate_greedy(executor, [encode(p)], args.max_tokens)[0] for p in prompts]
        for name, validator in validators.items():
            print(f"{name:26}{row(validator, rules, prompts, answers, args.max_tokens)}", flush=True)


if __name__ == "__main__":
    main()
