"""The bodies participants sign, one builder per message kind: stages sign them, verify-chain rebuilds them from rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def task_body(chain_id: str, developer_key: str, nonce: int, model: str, prompt: str, max_tokens: int, max_price: int,
              version: str = "") -> dict:
    """What a developer signs to order inference; `version` names a model version, '' (no field) asks for the served one."""
    body = {"chain_id": chain_id, "developer": developer_key, "nonce": nonce, "model": model, "prompt": prompt,
            "max_tokens": max_tokens, "max_price": max_price}
    return body | {"version": version} if version else body


def training_body(chain_id: str, developer_key: str, nonce: int, model: str, base_version: str, shards: Sequence[str],
                  steps: int, batch_size: int, learning_rate: float, seed: int, max_price: int) -> dict:
    """What a developer signs to order training (PROTOCOL section 4, "Training tasks")."""
    return {"chain_id": chain_id, "developer": developer_key, "nonce": nonce, "kind": "train", "model": model,
            "base_version": base_version, "shards": list(shards), "steps": steps, "batch_size": batch_size,
            "learning_rate": learning_rate, "seed": seed, "max_price": max_price}


def task_body_of(row: Mapping[str, Any]) -> dict:
    """The body a stored task row was signed as (the row joined with its chain id and its developer's `signer_key`)."""
    return task_body(row["chain_id"], row["signer_key"], row["nonce"], row["model"], row["prompt"], row["max_tokens"],
                     row["max_price"], row["version"])


def training_body_of(row: Mapping[str, Any]) -> dict:
    """The body a stored training task row was signed as (joined as for task_body_of)."""
    return training_body(row["chain_id"], row["signer_key"], row["nonce"], row["model"], row["base_version"], row["shards"],
                         row["steps"], row["batch_size"], row["learning_rate"], row["seed"], row["max_price"])


def training_result_body(task_id: str, executor: str, version: str, checkpoint_steps: Sequence[int],
                         checkpoints: Sequence[str], losses: Sequence[float], tokens: int) -> dict:
    """What an executor signs for a training task: the final version, the intermediate checkpoints, the loss curve."""
    return {"task_id": task_id, "executor": executor, "version": version, "checkpoint_steps": list(checkpoint_steps),
            "checkpoints": list(checkpoints), "losses": list(losses), "tokens": tokens}


def training_verdict_body(epoch: int, task_id: str, validator: str, first_step: int, last_step: int, passed: bool,
                          eval_loss: float, reason: str) -> dict:
    """What a validator signs after re-running steps first_step .. last_step - 1 of a training task."""
    return {"epoch": epoch, "task_id": task_id, "validator": validator, "first_step": first_step, "last_step": last_step,
            "passed": passed, "eval_loss": eval_loss, "reason": reason}


def poc_batch_body(epoch: int, public_key: str, prev_hash: str, sequence: int, nonces: Sequence[int],
                   distances: Sequence[float]) -> dict:
    return {"epoch": epoch, "public_key": public_key, "block_hash": prev_hash, "sequence": sequence,
            "nonces": list(nonces), "distances": list(distances)}


def poc_verdicts_body(epoch: int, validator: str, hosts: Sequence[str], sampled: Sequence[int], mismatches: Sequence[int],
                      valid: Sequence[bool]) -> dict:
    """One signature per validator over all its sprint verdicts, packed as parallel vectors over the hosts it checked
    (ascending): 1,000 hosts cost one record and one signature per validator instead of a million rows (ours)."""
    return {"epoch": epoch, "validator": validator, "hosts": list(hosts), "sampled": list(sampled),
            "mismatches": list(mismatches), "valid": list(valid)}


def seed_commitment_body(epoch: int, commitment: str) -> dict:
    return {"epoch": epoch, "commitment": commitment}


def result_body(task_id: str, executor: str, output_tokens: Sequence[int], top_ids: Sequence[Sequence[int]],
                top_logprobs: Sequence[Sequence[float]]) -> dict:
    return {"task_id": task_id, "executor": executor, "output_tokens": list(output_tokens),
            "top_ids": [list(ids) for ids in top_ids], "top_logprobs": [list(lps) for lps in top_logprobs]}


def task_verdict_body(epoch: int, task_id: str, validator: str, similarity: float, passed: bool, reason: str) -> dict:
    return {"epoch": epoch, "task_id": task_id, "validator": validator, "similarity": similarity, "passed": passed,
            "reason": reason}
