"""gonka_pipelines: run and audit the epochs of a Gonka-style AI-compute network with Dagster and DuckDB."""

import os
import platform

# Blocks commit floats that torch computes on the CPU (losses, PoC distances, trained weights' hashes), so the same
# genesis and submissions give the same blocks only if every machine rounds alike. MKL and oneDNN pick their kernels by
# CPU, and ATen its vector width (the same demo sealed different blocks on two x86 machines), so all three are held to
# one choice on every x86 machine: MKL's conditional-numerical-reproducibility mode, AVX2 for ATen and oneDNN. Set
# before torch loads (this package is imported first everywhere: CLI, Dagster, Ray workers, tests); an explicit setting
# wins, at the price of blocks that differ from other machines'.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
