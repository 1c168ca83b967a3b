"""Training through accelerate (compute/training.py): deterministic on CPU, resumable from any checkpoint to the same
bytes, accumulating gradients past the micro-batch, content-addressed checkpoints with clear errors, and a loss that
falls on the shipped corpus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gonka_pipelines.compute.decoder import parameter_count
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import served_model_seed
from gonka_pipelines.compute.training import (
    CheckpointError,
    TrainingSpec,
    evaluate,
    read_checkpoint,
    restore,
    step_windows,
    train,
    write_checkpoint,
)
from gonka_pipelines.local.paths import RESOURCES

PROFILE = load_profile("llm-tiny")
SEED = served_model_seed("llm-tiny")
MANIFEST = yaml.safe_load((RESOURCES / "corpus" / "manifest.yaml").read_text())["shards"]
TRAIN = (RESOURCES / "corpus" / f"{MANIFEST[0]['hash']}.txt").read_bytes()
EVAL = (RESOURCES / "corpus" / f"{next(s['hash'] for s in MANIFEST if s['role'] == 'eval')}.txt").read_bytes()
SPEC = TrainingSpec(steps=6, batch_size=8, learning_rate=3e-3, seed=7, checkpoint_every=2)


@pytest.fixture(scope="module")
def run():
    return train(PROFILE, SEED, None, TRAIN, SPEC, device="cpu")


def test_the_corpus_manifest_names_the_shipped_bytes():
    import hashlib

    assert [s["role"] for s in MANIFEST] == ["train"] * 6 + ["eval"]
    for shard in MANIFEST:
        data = (RESOURCES / "corpus" / f"{shard['hash']}.txt").read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["hash"] and len(data) == shard["bytes"] > 500_000


def test_a_run_checkpoints_every_k_steps_and_after_the_last(run):
    assert [step for step, _, _ in run.checkpoints] == [2, 4, 6]
    assert len(run.losses) == 6 and run.tokens == 6 * 8 * PROFILE.seq_len
    assert run.losses[-1] < run.losses[0] - 0.5, "the loss falls on real text"


def test_the_same_task_gives_the_same_bytes(run):
    again = train(PROFILE, SEED, None, TRAIN, SPEC, device="cpu")
    assert [h for _, h, _ in again.checkpoints] == [h for _, h, _ in run.checkpoints] and again.losses == run.losses


def test_any_step_range_re_runs_from_the_checkpoint_before_it_to_the_same_bytes(run):
    """What a validator does: restore the checkpoint after step 2, re-run steps 2 and 3, compare with the one after 4."""
    replay = train(PROFILE, SEED, run.checkpoints[0][2], TRAIN, SPEC, first_step=2, last_step=4, device="cpu")
    assert replay.checkpoints[-1][1] == run.checkpoints[1][1] and replay.losses == run.losses[2:4]
    other_shard = train(PROFILE, SEED, run.checkpoints[0][2], EVAL, SPEC, first_step=2, last_step=4, device="cpu")
    assert other_shard.checkpoints[-1][1] != run.checkpoints[1][1], "training on other bytes shows"
    with pytest.raises(CheckpointError, match="follows step 2, not 4"):
        train(PROFILE, SEED, run.checkpoints[0][2], TRAIN, SPEC, first_step=4, last_step=6, device="cpu")


def test_a_trained_version_is_fine_tuned_from_its_weights_with_fresh_moments(run):
    """From step 0 the base is a model version: its weights, not its optimizer state (a new task, a new schedule)."""
    child = train(PROFILE, SEED, run.checkpoints[-1][2], TRAIN, dataclasses.replace(SPEC, steps=2), device="cpu")
    assert child.losses[0] == pytest.approx(run.losses[-1], abs=0.6) and child.losses[0] < run.losses[0] - 0.5


def test_a_batch_beyond_the_micro_batch_accumulates_gradients():
    """batch 32 on llm-tiny (micro-batch 16): two accumulated micro-batches, close to one full batch (fp32 sums differ
    in the last bits only)."""
    spec = dataclasses.replace(SPEC, steps=2, batch_size=32, checkpoint_every=2)
    accumulated = train(PROFILE, SEED, None, TRAIN, spec, device="cpu")
    whole = train(dataclasses.replace(PROFILE, batch_size=32), SEED, None, TRAIN, spec, device="cpu")
    assert accumulated.losses == pytest.approx(whole.losses, rel=1e-5)
    assert accumulated.tokens == 2 * 32 * PROFILE.seq_len


def test_windows_are_drawn_from_the_seed_and_step_only():
    assert step_windows(10_000, 256, 7, 3, 4) == step_windows(10_000, 256, 7, 3, 4)
    assert step_windows(10_000, 256, 7, 3, 4) != step_windows(10_000, 256, 7, 4, 4)
    assert all(0 <= o < 10_000 - 256 for o in step_windows(10_000, 256, 1, 0, 64))
    with pytest.raises(ValueError, match="fewer than one window"):
        step_windows(200, 256, 1, 0, 1)


def test_training_lowers_the_held_out_loss(run):
    before = evaluate(PROFILE, SEED, None, EVAL, 32, seed=1, device="cpu")
    after = evaluate(PROFILE, SEED, run.checkpoints[-1][2], EVAL, 32, seed=1, device="cpu")
    assert before > 5.5 > after + 0.5, "ln 260 = 5.56 for a model that knows nothing"


def test_checkpoints_are_stored_by_hash_and_errors_name_the_file(run, tmp_path: Path):
    step, digest, data = run.checkpoints[-1]
    path = write_checkpoint(tmp_path, data)
    assert path.name == f"{digest}.safetensors" and read_checkpoint(tmp_path, digest) == data
    assert write_checkpoint(tmp_path, data) == path, "idempotent"
    with pytest.raises(CheckpointError, match=f"checkpoint {'0' * 12} is missing"):
        read_checkpoint(tmp_path, "0" * 64)
    path.write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match=f"does not hash to {digest[:12]}: it was altered or truncated"):
        read_checkpoint(tmp_path, digest)
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        restore(PROFILE, b"garbage" * 10, SEED, 1e-3, __import__("torch").device("cpu"))


@pytest.mark.slow
def test_the_gpu_profile_has_tens_of_millions_of_parameters_and_trains_on_cpu_too():
    """llm-gpu (the profile bench_training.py measures on CUDA, bf16 autocast) is ~25 M parameters; on a machine
    without a GPU the same path trains it in fp32: one step of one window gives a finite loss and a checkpoint."""
    profile = load_profile("llm-gpu")
    assert 10_000_000 <= parameter_count(profile) <= 100_000_000 and profile.dtype == "bfloat16"
    result = train(profile, served_model_seed("llm-gpu"), None, TRAIN, TrainingSpec(1, 1, 1e-3, 0, 1), device="cpu")
    assert len(result.losses) == 1 and 5.0 < result.losses[0] < 6.5, "random weights: about ln 260 = 5.56"
    assert result.final_hash == result.checkpoints[-1][1]
