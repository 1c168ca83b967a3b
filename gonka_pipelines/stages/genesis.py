"""Genesis: accounts, hosts and the signed block 0 of a new chain, from genesis.yaml and network.yaml."""

from __future__ import annotations

import os

from gonka_pipelines.chain.store import ChainError, ChainStore, Head
from gonka_pipelines.compute.decoder import parameter_count
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import served_model_seed
from gonka_pipelines.compute.training import checkpoint_hash, evaluate, genesis_checkpoint, write_checkpoint
from gonka_pipelines.local.config import ConfigError
from gonka_pipelines.local.corpus import eval_bytes, manifest
from gonka_pipelines.local.keys import load_identities
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import GENESIS_PREV_HASH, BlockHeader, signature_set_hash
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.host_status import HostStatus
from gonka_pipelines.protocol.intake import max_submission_bytes
from gonka_pipelines.protocol.params import MAX_INT64, GenesisParams, NetworkConfig
from gonka_pipelines.protocol.rules import rules_for
from gonka_pipelines.stages.environment import epoch_parameters


def check_runnable(params: GenesisParams, network: NetworkConfig) -> None:
    """Refuse, before anything is written, a configuration whose epochs could not run: models that do not exist or do not
    fit their role, task limits beyond a served model's context or the submission size limit, amounts beyond the chain's
    integers, or a sprint in which no host can expect a hit (in real mode, measured on this machine). The ConfigError
    names the field."""
    def refuse(field: str, problem: str) -> ConfigError:
        return ConfigError(f"genesis profile {params.profile!r}: field '{field}': {problem}")

    try:
        sprint_model = load_profile(params.sprint.model)
    except ValueError as error:
        raise refuse("sprint.model", str(error)) from error
    if sprint_model.kind != "poc":
        raise refuse("sprint.model", f"{sprint_model.name} is a {sprint_model.kind} model, the sprint needs a poc model")
    context = params.tasks.max_prompt_bytes + 1 + params.tasks.max_tokens_limit  # the prompt's bytes, BOS, the output
    for host in network.hosts:
        for model in host.models:
            try:
                served = load_profile(model)
            except ValueError as error:
                raise ConfigError(f"network: host {host.name!r} serves {model!r}: {error}") from error
            if served.kind != "llm":
                raise ConfigError(f"network: host {host.name!r} serves {model!r}, a {served.kind} model, not a language model")
            if context > served.seq_len:
                raise refuse("tasks.max_prompt_bytes", f"max_prompt_bytes {params.tasks.max_prompt_bytes} + BOS + max_tokens_limit "
                                                       f"{params.tasks.max_tokens_limit} exceed {model}'s context of {served.seq_len}")
    if params.tasks.max_submission_bytes < (needed := max_submission_bytes(params.tasks.max_prompt_bytes)):
        raise refuse("tasks.max_submission_bytes", f"{params.tasks.max_submission_bytes} bytes would refuse a valid task: a "
                                                   f"{params.tasks.max_prompt_bytes}-byte prompt may need {needed}")
    if (params.tasks.max_prompt_bytes + params.tasks.max_tokens_limit) * params.tasks.price_per_token > MAX_INT64:
        raise refuse("tasks.price_per_token", "the largest task's escrow exceeds the chain's integers (2**63 - 1)")
    if network.genesis_supply > MAX_INT64 or params.emission.supply_cap > MAX_INT64 - network.genesis_supply:
        raise refuse("emission.supply_cap", "genesis supply plus everything that may be minted exceeds 2**63 - 1")
    budget = max(host.capacity for host in network.hosts) * params.sprint.nonces_per_capacity
    if params.sprint.mode == "simulation" and budget * params.sprint.wanted_hit_rate < 1:
        raise refuse("sprint.nonces_per_capacity", f"the largest host mines {budget} nonces at a hit rate of "
                                                   f"{params.sprint.wanted_hit_rate}: no host can expect a hit, so none wins weight")
    if params.sprint.mode == "real":
        needed, free = 4 * parameter_count(sprint_model), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        if needed > free:
            raise refuse("sprint.model", f"{sprint_model.name}'s float32 weights take {needed / 2**30:,.1f} GiB and this "
                                         f"machine has {free / 2**30:,.1f} GiB free: no host here could mine a real-mode sprint")
        rate = TorchCompute(params.sprint.model, GENESIS_PREV_HASH).nonce_rate()
        if (expected := params.sprint.duration_seconds * rate * params.sprint.wanted_hit_rate) < 1:
            raise refuse("sprint.duration_seconds", f"a real-mode sprint of {params.sprint.duration_seconds} s mines about "
                                                    f"{rate:,.0f} nonces/s with {params.sprint.model} on this machine: "
                                                    f"{expected:.2g} expected hits at a hit rate of {params.sprint.wanted_hit_rate}, "
                                                    "so no host can expect one and none wins weight")


def genesis_versions(layout: DataLayout, params: GenesisParams, network: NetworkConfig) -> list[dict]:
    """Each served model's genesis version: its seeded random weights as a checkpoint (stored under the chain's
    artifacts), scored on the held-out shard, so every later version's held-out loss has a baseline."""
    held_out = eval_bytes()
    versions: list[dict] = []
    for model in sorted({m for host in network.hosts for m in host.models}):
        profile, seed = load_profile(model), served_model_seed(model)
        checkpoint = genesis_checkpoint(profile, seed)
        write_checkpoint(layout.checkpoints, checkpoint)
        versions.append({"version": checkpoint_hash(checkpoint), "model": model, "parent": "", "task_id": "", "executor": "",
                         "shards": [], "final_loss": None,
                         "eval_loss": evaluate(profile, seed, None, held_out, params.training.eval_windows, seed=0, device="cpu")})
    return versions


def init_chain(store: ChainStore, layout: DataLayout, params: GenesisParams, network: NetworkConfig) -> Head:
    """Create block 0 once; calling it again on the same chain is a no-op, on another chain an error. A configuration
    whose epochs could not run is refused first (check_runnable)."""
    if store.initialized:
        if store.chain_id != params.chain_id:
            raise ChainError(f"{layout.database} already holds chain {store.chain_id!r}; use another data dir for {params.chain_id!r}")
        return store.head()
    check_runnable(params, network)
    identities = load_identities(layout, network, params.chain_id)
    hosts = {identities[h.name].address: (h, identities[h.name]) for h in network.hosts}
    developers = {identities[d.name].address: (d, identities[d.name]) for d in network.developers}
    weight = params.sprint.genesis_weight  # PROTOCOL section 2: epoch 0 has no sprint; every genesis host has this weight
    rules = rules_for(epoch_parameters(params, 0))
    with store.transaction():
        store.write_genesis(
            params,
            accounts=[{"address": a, "name": c.name, "kind": "host", "public_key": k.public_key} for a, (c, k) in hosts.items()]
            + [{"address": a, "name": c.name, "kind": "developer", "public_key": k.public_key} for a, (c, k) in developers.items()],
            hosts=[{"address": a, "name": c.name, "public_key": k.public_key, "capacity": c.capacity, "models": list(c.models),
                    "behaviour": c.behaviour.value} for a, (c, k) in hosts.items()],
            account_states=[{"address": a, "balance": 0, "escrow": 0, "collateral": c.collateral} for a, (c, _) in hosts.items()]
            + [{"address": a, "balance": c.balance, "escrow": 0, "collateral": 0} for a, (c, _) in developers.items()],
            host_states=[{"address": a, "weight": weight, "status": HostStatus.RAMPING.value} for a in hosts])
        store.register_training([vars(shard) for shard in manifest()], genesis_versions(layout, params, network))
        weights = {address: weight for address in hosts}
        header = BlockHeader(chain_id=params.chain_id, height=0, prev_hash=GENESIS_PREV_HASH,
                             timestamp=params.block_timestamp(0), params_hash=params.params_hash, roots=store.epoch_roots(0),
                             proposer=rules.choose_proposer(GENESIS_PREV_HASH, weights), prev_signatures=signature_set_hash([]))
        body = header.as_dict()
        signatures = [{"signer": a, "signature": k.sign(params.chain_id, MessageKind.BLOCK, body), "weight": weight}
                      for a, (_, k) in sorted(hosts.items())]
        store.save_genesis_block(body, header.hash, signatures)
    return store.head()
