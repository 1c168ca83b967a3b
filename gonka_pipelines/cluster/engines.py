"""Where hosts' model work runs: in this process, one item after another (local), or as Ray tasks on a cluster (ray).

A stage hands an engine a module-level work function `work(compute, item)`, the items (one per host, or per
executor's group of tasks) and the epoch's compute; the engine returns the results in item order (a Ray worker runs
its own build of the same compute). Work is pure: the same item gives the same
bytes on every engine, so blocks do not depend on where it ran, and a lost worker's item can simply be run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from gonka_pipelines.compute.engine import Compute, TorchComputeSpec
from gonka_pipelines.local.config import ComputeSettings

Item = TypeVar("Item")
Result = TypeVar("Result")


class Engine(Protocol):
    """Runs work items and returns their results in order."""

    name: str

    def map(self, work: Callable[[Compute, Item], Result], items: Sequence[Item], compute: Compute) -> list[Result]: ...


class LocalEngine:
    """Every item in this process, one after another, on the compute given (the torch models, or a stand-in)."""

    name = "local"

    def map(self, work: Callable[[Compute, Item], Result], items: Sequence[Item], compute: Compute) -> list[Result]:
        return [work(compute, item) for item in items]


def engine_for(settings: ComputeSettings, spec: TorchComputeSpec) -> Engine:
    """The engine the settings name; on Ray each worker builds the epoch's compute from `spec` once."""
    if settings.engine == "ray":
        from gonka_pipelines.cluster.ray_engine import RayEngine  # Ray loads only where it is used

        return RayEngine(settings.ray, spec)
    return LocalEngine()
