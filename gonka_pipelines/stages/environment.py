"""The epoch environment: what every stage of one epoch starts from, read once per run from the chain's head.

The previous block hash (`prev_hash`) seeds every draw of the epoch; the parameters are derived from genesis
for the epoch; keys, the host registry, the weights in force and each host's secret seed do not change while
the epoch runs; the rule set the params name decides. Stages receive the environment and a way to open the chain,
and never re-read any of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import polars as pl

from gonka_pipelines.chain.record_roots import BY_KIND, record_leaves
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.cluster.engines import Engine, Item, LocalEngine, Result, engine_for
from gonka_pipelines.compute.engine import Compute, TorchComputeSpec
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.local.config import ComputeSettings, load_compute_settings
from gonka_pipelines.local.keys import load_key
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, sha256_hex, sign_each
from gonka_pipelines.protocol.merkle import digest_runs
from gonka_pipelines.protocol.params import EpochParams, GenesisParams
from gonka_pipelines.protocol.record_roots import leaves_root_body, sign_records, signed_roots
from gonka_pipelines.protocol.records import Host
from gonka_pipelines.protocol.rules import RuleSet, rules_for
from gonka_pipelines.protocol.sprint import calibrate_r_target

Log = Callable[[str], None]
"""Where a stage reports progress per host or batch (Dagster's context.log.info, print, or nothing)."""

OpenChain = Callable[[], AbstractContextManager[ChainStore]]
"""Opens the chain for one read or one write; stages hold no connection while models run."""


T = TypeVar("T")


def quiet(_: str) -> None:
    """A progress log that says nothing."""


def epoch_parameters(genesis: GenesisParams, epoch: int) -> EpochParams:
    """Everything an epoch runs under; r_target is calibrated from the sprint model's vocab and the wanted hit rate."""
    vocab = load_profile(genesis.sprint.model).vocab
    return EpochParams.derive(genesis, epoch, calibrate_r_target(vocab, genesis.sprint.wanted_hit_rate))


def host_keys(hosts: list[Host], layout: DataLayout) -> dict[str, KeyPair]:
    """Key pair of every host by address; a missing or foreign key file is an error naming the file."""
    keys = {}
    for host in hosts:
        path = layout.key_file(host.name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: key file of host {host.name} not found (simulated hosts sign from data/keys/)")
        pair = load_key(path)
        if pair.public_key != host.public_key:
            raise ValueError(f"{path}: key does not match host {host.name}'s public key on the chain")
        keys[host.address] = pair
    return keys


def secret_seed(key: KeyPair, chain_id: str, epoch: int, prev_hash: str) -> str:
    """A host's secret epoch seed: the hash of its signature over (epoch, previous block hash), reproducible only with its key."""
    return _seed_of(key.sign(chain_id, MessageKind.SEED_COMMIT, _secret_for(epoch, prev_hash)))


def secret_seeds_of(keys: Sequence[KeyPair], chain_id: str, epoch: int, prev_hash: str) -> list[str]:
    """secret_seed of each key, signed on a thread per core (10,000 hosts' seeds took 0.16 s one by one)."""
    body = _secret_for(epoch, prev_hash)
    return [_seed_of(signature) for signature in sign_each(chain_id, MessageKind.SEED_COMMIT, [(key, body) for key in keys])]


def _secret_for(epoch: int, prev_hash: str) -> dict:
    """What a host signs to derive its secret epoch seed."""
    return {"epoch": epoch, "secret_for": prev_hash}


def _seed_of(signature_hex: str) -> str:
    """The secret seed a signature gives: its hash."""
    return sha256_hex(bytes.fromhex(signature_hex))


@dataclass(frozen=True)
class EpochEnvironment:
    """One epoch's fixed inputs, built once per run by `build_environment`."""

    epoch: int
    chain_id: str
    prev_hash: str
    params: EpochParams
    layout: DataLayout
    hosts: tuple[Host, ...]
    keys: dict[str, KeyPair]
    weights: dict[str, int]
    compute: Compute
    served: dict[str, str]
    """Each model's served version in force this epoch (the previous epoch's post-state), by model name."""
    engine: Engine = field(default_factory=LocalEngine)
    """Where hosts' work runs when a stage hands it over item by item (this process, or Ray tasks): see `on_hosts`."""

    @cached_property
    def rules(self) -> RuleSet:
        """The rule set the params name, bound to them (the one way stages decide)."""
        return rules_for(self.params)

    @cached_property
    def secret_seeds(self) -> dict[str, str]:
        """Every host's secret epoch seed by address (derived once; the validation draw and the claims use it)."""
        return dict(zip((host.address for host in self.hosts),
                        secret_seeds_of([self.keys[host.address] for host in self.hosts], self.chain_id, self.epoch, self.prev_hash)))

    def on_hosts(self, work: Callable[[Compute, Item], Result], items: Sequence[Item]) -> list[Result]:
        """work(compute, item) for every item, where the engine runs it; results in item order."""
        return self.engine.map(work, items, self.compute)

    def with_runs_version(self, tasks: pl.DataFrame) -> pl.DataFrame:
        """The tasks (`model` and `version` columns) with the model version each runs on as `runs_version`: the one it
        named, else the one the network serves this epoch (a ValueError names a model served in no version)."""
        served = pl.col("model").replace_strict(self.served, default=None, return_dtype=pl.String)
        tasks = tasks.with_columns(pl.when(pl.col("version") != "").then(pl.col("version")).otherwise(served).alias("runs_version"))
        if unserved := tasks.filter(pl.col("runs_version").is_null())["model"].unique().sort().to_list():
            raise ValueError(f"tasks ask for the served version of {', '.join(map(repr, unserved))}, which no version serves")
        return tasks

    @cached_property
    def host(self) -> dict[str, Host]:
        """The hosts by address."""
        return {host.address: host for host in self.hosts}

    def sign_records(self, kind: MessageKind, bodies: dict[str, list[dict]]) -> list[dict]:
        """Each signer's one signature over its epoch's records of this kind (bodies by signer address): a record_roots
        row per signer, leaves in task id order (protocol/record_roots.py)."""
        encoding = self.params.tasks.record_encoding
        return [sign_records(self.keys[signer], self.chain_id, self.epoch, signer, kind, sorted(mine, key=lambda r: r["task_id"]),
                             encoding) for signer, mine in sorted(bodies.items())]

    def sign_rows(self, kind: MessageKind, rows: pl.DataFrame) -> list[dict]:
        """sign_records of records held as columns (sorted by signer, then task id): their leaves hashed in bulk
        (record_leaves), then one root per run of a signer's rows."""
        spec = BY_KIND[kind]
        leaves = record_leaves(rows.select(*spec.body).to_arrow(), self.chain_id, kind, self.params.tasks.record_encoding)
        runs = rows[spec.signer].rle()
        signers, counts = runs.struct.field("value").to_list(), runs.struct.field("len").to_list()
        return signed_roots(self.chain_id, [(self.keys[signer], leaves_root_body(self.epoch, signer, kind, mine))
                                            for signer, mine in zip(signers, digest_runs(leaves, counts), strict=True)])

    def executors(self, model: str, task_ids: list[str]) -> list[str]:
        """Each task's executor, drawn ∝ weight among the hosts serving the model ('' when none does)."""
        serving = [h.address for h in self.hosts if model in h.models and self.weights.get(h.address, 0) > 0]
        if not serving:
            return [""] * len(task_ids)
        return self.rules.assign_executors(self.prev_hash, task_ids, serving, [self.weights[a] for a in serving])


WORK_ITEMS = 1024
"""Work items a stage cuts its mining or its re-runs into at most: more than any cluster has workers, and few enough
that their answers (a small Arrow table each, about 25 µs to make and read back) cost little to gather (at 10,000
hosts x 1,000,000 tasks: 10,000 mining tables and 20,000 re-run tables before, 0.3-0.4 s each)."""


@contextmanager
def made_meanwhile(make: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """make() on a thread of its own while the caller goes on (a stage signs its records while its rows go into the
    chain, whose inserts leave the GIL); the callable given waits for the result, or raises make's error."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(make).result


def work_item_size(count: int, least: int = 1) -> int:
    """How many of `count` things (hosts, re-runs) one work item holds: `least`, or more where that would make over
    WORK_ITEMS work items."""
    return max(least, -(-count // WORK_ITEMS))


def build_environment(store: ChainStore, layout: DataLayout, epoch: int, device: str | None = None,
                      compute: Compute | None = None, genesis: GenesisParams | None = None,
                      settings: ComputeSettings | None = None) -> EpochEnvironment:
    """Read the epoch's inputs from the head (the epoch must be its successor); compute defaults to the torch models
    (the sprint profile seeded from the previous block hash, model versions from the chain's checkpoints) on `device`,
    run where `settings` say (default: compute.yaml); a given `compute` (a benchmark's stand-in) runs in this process.
    `genesis` replaces the chain's genesis parameters (a what-if fork; the epoch records what it ran under)."""
    store.require_writable(epoch)
    prev_hash, hosts = store.head().hash, store.hosts()
    params = epoch_parameters(genesis or store.genesis(), epoch)
    engine: Engine = LocalEngine()
    if compute is None:
        settings = settings or load_compute_settings(device=device)
        spec = TorchComputeSpec(params.sprint.model, prev_hash, device or settings.device, str(layout.checkpoints))
        compute, engine = spec.build(), engine_for(settings, spec)
    return EpochEnvironment(epoch=epoch, chain_id=store.chain_id, prev_hash=prev_hash, params=params, layout=layout,
                            hosts=tuple(hosts), keys=host_keys(hosts, layout), weights=store.weights(epoch - 1),
                            compute=compute, served=store.served_versions(epoch - 1), engine=engine)


def holding(store: ChainStore) -> OpenChain:
    """An OpenChain over a store the caller already holds open (tests, scripts): every open returns it."""

    @contextmanager
    def reuse() -> Iterator[ChainStore]:
        yield store

    return reuse
