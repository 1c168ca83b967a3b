"""Host compute on Ray: actors that keep each epoch's models loaded run the work items a stage hands them.

The chain stays in the driver (one writer); workers only compute. Each actor builds an epoch's TorchCompute once
from its picklable spec and reuses it for every item of every stage. Ray retries an item whose worker process died
on a restarted actor (`ray.max_retries`); when retries run out the stage fails before it writes, leaving the chain
as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import ray
from ray.util import ActorPool

from gonka_pipelines.compute.engine import Compute, TorchCompute, TorchComputeSpec
from gonka_pipelines.local.config import RaySettings
from gonka_pipelines.local.failpoints import failpoint


@lru_cache(maxsize=2)
def _compute(spec: TorchComputeSpec) -> TorchCompute:
    """The epoch's compute in this worker: built on its first item, its models cached for the rest."""
    return spec.build()


@ray.remote
class HostWorker:
    """A Ray actor that runs work items; its models outlive the items (and the stages) that use them."""

    def run(self, spec: TorchComputeSpec, work: Callable[[Compute, Any], Any], item: Any) -> Any:
        failpoint(f"ray.{work.__name__}")  # tests kill the worker here, mid-stage
        return work(_compute(spec), item)

    def pid(self) -> int:
        return os.getpid()


def connect(settings: RaySettings) -> None:
    """Join the cluster at settings.address, or start one in this process (every core) when it names none."""
    if ray.is_initialized():
        return
    if settings.address:
        ray.init(address=settings.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)


_POOLS: dict[tuple[str, str, RaySettings], list[Any]] = {}
"""Actors per (cluster node, Ray job, settings): later epochs in the same process reuse them and their loaded models;
a new cluster (or a new connection to one) gets new actors."""


def _pool_key(settings: RaySettings) -> tuple[str, str, RaySettings]:
    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_job_id(), settings


def workers(settings: RaySettings) -> list[Any]:
    """This job's actors for the settings: `workers` of them, else as many as the cluster's CPUs (GPUs) allow."""
    key = _pool_key(settings)
    if key not in _POOLS:
        count = settings.workers or _fitting(ray.cluster_resources(), settings)
        options = {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus,
                   "max_restarts": settings.max_retries, "max_task_retries": settings.max_retries}
        _POOLS[key] = [HostWorker.options(**options).remote() for _ in range(count)]  # type: ignore[attr-defined]
    return _POOLS[key]


def _fitting(resources: dict[str, float], settings: RaySettings) -> int:
    """How many actors of the requested size fit the cluster at once (at least one)."""
    fits = int(resources.get("CPU", 1) // settings.num_cpus)
    if settings.num_gpus:
        fits = min(fits, int(resources.get("GPU", 0) // settings.num_gpus))
    return max(1, fits)


class RayEngine:
    """Work items as tasks on a pool of HostWorker actors, results back in item order."""

    name = "ray"

    def __init__(self, settings: RaySettings, spec: TorchComputeSpec):
        connect(settings)
        self.settings, self.spec = settings, spec
        self.key = _pool_key(settings)
        self.actors = workers(settings)

    def map(self, work: Callable[[Compute, Any], Any], items: Sequence[Any], compute: Compute) -> list[Any]:
        """`compute` is the driver's; each worker runs its own build of the same spec instead. A worker that died
        more often than it may be restarted fails the map: the pool's actors are killed then, not left to the driver's
        collector to free their handles (their CPUs go back to the cluster at once), and the next engine starts fresh
        workers."""
        pool = ActorPool(self.actors)
        try:
            return list(pool.map(lambda actor, item: actor.run.remote(self.spec, work, item), list(items)))
        except ray.exceptions.RayActorError:
            _POOLS.pop(self.key, None)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            raise

    def worker_pids(self) -> list[int]:
        """The actors' process ids (tests kill one mid-stage)."""
        return ray.get([actor.pid.remote() for actor in self.actors])
