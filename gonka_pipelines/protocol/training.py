"""Which model version the network serves: a rule over the versions the chain holds (pure, replayable by anyone)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionScore:
    version: str
    model: str
    epoch: int
    eval_loss: float


def served_version(versions: Iterable[VersionScore], model: str) -> str:
    """The model's version with the lowest held-out loss; ties go to the earliest epoch, then the lowest hash. The
    genesis version always exists, so a model the chain registered always has one."""
    candidates = [v for v in versions if v.model == model]
    if not candidates:
        raise ValueError(f"the chain holds no version of model {model!r}")
    return min(candidates, key=lambda v: (v.eval_loss, v.epoch, v.version)).version
