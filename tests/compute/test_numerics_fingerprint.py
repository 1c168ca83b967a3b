"""tools/numerics_fingerprint.py: what two machines compare to find the operation where their blocks part."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "numerics_fingerprint.py"


@pytest.mark.slow
def test_the_fingerprint_is_the_same_in_two_processes_and_names_every_operation():
    """Two fresh processes on one machine print the same fingerprint (else comparing machines would mean nothing),
    with a line for BLAS, MKL's vector math, ATen's kernels, the sprint, a forward pass and training."""
    runs = [subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    names = [line.split("  ")[0] for line in runs[0].splitlines()]
    for expected in ("sgemm 64x256 @ 256x192 (MKL)", "log (MKL VML)", "sqrt (MKL VML)", "log1p (ATen)", "sprint distances, 256 nonces",
                     "llm-tiny genesis eval loss", "llm-tiny 4 training steps: checkpoint"):
        assert expected in names
    assert "MKL_CBWR" in names
