"""The compute seam: what enters a block must not depend on how many threads the process gives torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.runner import CPU_THREADS, reproducible_threads
from gonka_pipelines.simulation.workload import corpus_prompts

BLOCK = "ab" * 32
HOST = "cd" * 32


@pytest.fixture
def threads():
    """Set the process's torch thread count for one test, restoring it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _outputs(compute: TorchCompute):
    """Distances of 300 nonces and greedy answers to the corpus in executor batches of 8 (a shape where two
    threads round differently from one without the pin)."""
    prompts = corpus_prompts()
    distances = compute.distances(HOST, list(range(300)))
    generations = [g for i in range(0, len(prompts), 8)
                   for g in compute.generate("llm-tiny", "", "exec", "honest", prompts[i:i + 8], 16).to_pylist()]
    return distances, [(g["tokens"], g["top_logprobs"]) for g in generations]


def test_results_are_bit_identical_whatever_the_process_thread_count(threads):
    compute = TorchCompute("poc-tiny", BLOCK, device="cpu")
    threads(2)
    two_threads = _outputs(compute)
    threads(1)
    one_thread = _outputs(compute)
    assert np.array_equal(two_threads[0], one_thread[0])
    assert two_threads[1] == one_thread[1]


def test_the_thread_pin_is_restored_after_compute(threads):
    threads(2)
    with reproducible_threads(torch.device("cpu")):
        assert torch.get_num_threads() == CPU_THREADS
    assert torch.get_num_threads() == 2
