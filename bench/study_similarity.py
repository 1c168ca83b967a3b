"""Does inference validation separate the served model from other models once the served model is trained?

    .venv/bin/python bench/study_similarity.py [--steps 64] [--batch 16] [--prompts 40] [--max-tokens 16]

Trains llm-tiny twice through the project's path (compute/training.py): the served version on training shards 0-2 and
a rival on shards 3-5, same steps. The served version answers --prompts prompts of resources/corpus.txt greedily with
top-5 log-probs (an honest executor); then each candidate validator model re-runs every answer forcing its tokens and
the rule set's judge compares (PROTOCOL section 4, Comparison): the served version itself (an honest validator), the
genesis random weights, and the rival. Printed per validator model: pass rate, similarity median and range, and the
same for the answers where the validator model's own greedy choice matches every token (where only the log-prob test
can catch it). The figures are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.llm import EOS, encode, generate_greedy, score_forced
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner, reproducible_threads, served_model_seed
from gonka_pipelines.compute.training import TrainingSpec, evaluate, train
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.local.corpus import eval_bytes, manifest, training_bytes
from gonka_pipelines.local.paths import RESOURCES
from gonka_pipelines.protocol.inference_validation import compare_outputs
from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.rules import rules_for

MODEL = "llm-tiny"


def runner_of(checkpoint: bytes | None) -> ModelRunner:
    """What a host serving `checkpoint` as the model's version runs (None: the genesis weights), as the epoch builds it."""
    served = {MODEL: checkpoint} if checkpoint is not None else {}
    return TorchCompute(load_genesis().sprint.model, "00" * 32, "cpu", served).served(MODEL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    profile, seed = load_profile(MODEL), served_model_seed(MODEL)
    train_shards = [s.hash for s in manifest() if s.role == "train"]
    spec = TrainingSpec(args.steps, args.batch, 3e-3, 1, args.steps)
    started = time.perf_counter()
    served = train(profile, seed, None, training_bytes(train_shards[:3]), spec, device="cpu")
    rival = train(profile, seed, None, training_bytes(train_shards[3:]), spec, device="cpu")
    held_out = eval_bytes()
    print(f"trained 2 x {args.steps} steps x {args.batch} windows in {time.perf_counter() - started:.0f}s; held-out loss: "
          f"genesis {evaluate(profile, seed, None, held_out, 64, 0, 'cpu'):.3f}, "
          f"served {evaluate(profile, seed, served.checkpoints[-1][2], held_out, 64, 0, 'cpu'):.3f}, "
          f"rival {evaluate(profile, seed, rival.checkpoints[-1][2], held_out, 64, 0, 'cpu'):.3f}")
    rules = rules_for(EpochParams.derive(load_genesis(), 1, 1.0))
    executor = runner_of(served.checkpoints[-1][2])
    validators = {"served (honest re-run)": executor, "genesis random weights": runner_of(None),
                  "rival (other shards)": runner_of(rival.checkpoints[-1][2])}
    prompts = [line for line in (RESOURCES / "corpus.txt").read_text().splitlines() if line.strip()][: args.prompts]
    print(f"{len(prompts)} prompts, {args.max_tokens} tokens each; threshold {rules.params.validation.similarity_threshold}")
    validation = rules.params.validation
    print(f"{'validator model':26}{'judge pass':>11}{'log-prob similarity median':>28}{'range':>20}{'above 0.98':>12}"
          f"{'same tokens':>13}")
    with reproducible_threads(executor.device):
        answers = [generate_greedy(executor, [encode(p)], args.max_tokens)[0] for p in prompts]
        for name, validator in validators.items():
            passed, similarities, same_tokens = [], [], 0
            for prompt, answer in zip(prompts, answers):
                forced = score_forced(validator, encode(prompt), answer.tokens)
                passed.append(rules.judge(answer.tokens, args.max_tokens, EOS, (answer.top_ids, answer.top_logprobs),
                                          rescore=lambda forced=forced: forced).passed)
                # the log-prob test alone, as if the validator had chosen the executor's tokens (Gonka's comparison)
                similarities.append(compare_outputs(answer.tokens, answer.tokens, forced[0], forced[1], answer.top_ids,
                                                    answer.top_logprobs, threshold=validation.similarity_threshold,
                                                    epsilon=validation.logprob_epsilon,
                                                    min_positions=validation.min_normalising_positions).similarity)
                same_tokens += generate_greedy(validator, [encode(prompt)], args.max_tokens)[0].tokens == answer.tokens
            above = sum(s > validation.similarity_threshold for s in similarities)
            print(f"{name:26}{sum(passed) / len(passed):>11.0%}{statistics.median(similarities):>28.4f}"
                  f"{f'{min(similarities):.4f} .. {max(similarities):.4f}':>20}{f'{above}/{len(similarities)}':>12}"
                  f"{same_tokens:>13}")


if __name__ == "__main__":
    main()
