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


SERVED_RULES = {
    "lowest_eval_loss": lambda v: (v.eval_loss, v.epoch, v.version),
    "latest": lambda v: (-v.epoch, v.version),
}
"""training.served_rule: the sort key whose smallest version is served. `lowest_eval_loss`: the lowest held-out loss,
ties to the earliest epoch, then the lowest hash; `latest`: the newest version, ties to the lowest hash."""


def served_version(versions: Iterable[VersionScore], model: str, rule: str = "lowest_eval_loss") -> str:
    """The model's version the rule picks. The genesis version always exists, so a model the chain registered always
    has one."""
    candidates = [v for v in versions if v.model == model]
    if not candidates:
        raise ValueError(f"the chain holds no version of model {model!r}")
    return min(candidates, key=SERVED_RULES[rule]).version


def served_versions(versions: Iterable[VersionScore], rule: str) -> dict[str, str]:
    """Every model's served version under the rule, by model name."""
    known = list(versions)
    return {model: served_version(known, model, rule) for model in sorted({v.model for v in known})}
