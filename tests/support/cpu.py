"""The CPU vendor, for the expectations that still depend on it: blocks are not yet CPU-independent (docs/performance.md,
"Not yet CPU-independent"), so the pinned hashes and the demo's story are kept per vendor until they are."""

from __future__ import annotations

from pathlib import Path

AMD, INTEL = "AuthenticAMD", "GenuineIntel"


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id ('' where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), "")


CPU_VENDOR = cpu_vendor()
