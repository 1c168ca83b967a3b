"""The chain's commands: create it, sign tasks and training orders into its inbox, list model versions, run epochs,
summarize, verify and prove."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import Anchor, verify_chain
from gonka_pipelines.cli.options import DataDir, chain_folder
from gonka_pipelines.cli.runs import run_epochs
from gonka_pipelines.local.config import GENESIS_FILE, NETWORK_FILE, ConfigError, load_genesis, load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.local.verified import load_verified, save_verified
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.stages.collect import admit_waiting

commands = typer.Typer()

Profile = Annotated[str | None, typer.Option(help="genesis profile (default: the genesis file's default_profile)")]
GenesisFile = Annotated[Path, typer.Option(help="genesis parameters file")]
NetworkFile = Annotated[Path, typer.Option(help="hosts and developers file")]
Developer = Annotated[str, typer.Option(help="developer name (its key is DATA/keys/NAME.key)")]
Epochs = Annotated[int, typer.Option(help="how many epochs to run")]


@commands.command()
def init(profile: Profile = None, genesis: GenesisFile = GENESIS_FILE, network: NetworkFile = NETWORK_FILE,
         data_dir: DataDir = None) -> int:
    """Create the genesis block (no-op if it exists)."""
    from gonka_pipelines.defs.launch import register_next_epoch
    from gonka_pipelines.stages.genesis import init_chain

    layout = chain_folder(data_dir)
    params, chain_network = load_genesis(profile, genesis), load_network(network)
    with ChainStore.open(layout.database) as store:
        head = init_chain(store, layout, params, chain_network)
    register_next_epoch(layout, head.height + 1)
    print(f"chain {params.chain_id} ({params.profile}) at {layout.database}: head block {head.height} {head.hash[:16]}…; "
          f"epoch {head.height + 1} is next")
    return 0


def _developer_key(layout: DataLayout, name: str) -> KeyPair:
    """The developer's key pair; a missing key file is an error naming it and the chain's developers."""
    from gonka_pipelines.local.keys import load_key

    path = layout.key_file(name)
    if not path.exists():
        with ChainStore.open(layout.database, read_only=True) as store:
            known = store.developer_names()
        raise ConfigError(f"no key for developer {name!r} ({path}); the developers on this chain: {', '.join(known) or 'none'}")
    return load_key(path)


@commands.command()
def submit(developer: Developer,
           prompt: Annotated[str, typer.Option(help="the prompt (at most tasks.max_prompt_bytes bytes)")],
           model: Annotated[str, typer.Option(help="the served model to run")] = "llm-tiny",
           max_tokens: Annotated[int, typer.Option(help="most tokens to generate")] = 16,
           max_price: Annotated[int, typer.Option(help="most base units per token")] = 100,
           nonce: Annotated[int | None, typer.Option(help="default: one above the developer's last accepted nonce")] = None,
           version: Annotated[str | None, typer.Option(help="model version to run, 12 or more hex digits (default: the one the "
                                                            "network serves when the task runs, `gonka model list`)")] = None,
           data_dir: DataDir = None) -> int:
    """Sign a task with a developer key and put it in the inbox."""
    from gonka_pipelines.local.inbox import write_submission
    from gonka_pipelines.protocol.intake import Rejected
    from gonka_pipelines.simulation.client import checked_submission

    layout = chain_folder(data_dir)
    keypair = _developer_key(layout, developer)
    with ChainStore.open(layout.database, read_only=True) as store:
        try:
            raw, used_nonce = checked_submission(store, layout.inbox, keypair, model=model, prompt=prompt, max_tokens=max_tokens,
                                                 max_price=max_price, nonce=nonce, version=version or "")
        except Rejected as rejection:
            print(f"error: not submitted, the collector would reject it: {rejection}", file=sys.stderr)
            return 2
    submission_id = write_submission(layout.inbox, raw)
    print(f"submitted {submission_id} (nonce {used_nonce}) to {layout.inbox}")
    return 0


def _each_shard(values: list[str] | None) -> list[str] | None:
    """--shards as given: repeated (--shards A --shards B), comma-separated (--shards A,B) or both."""
    return [shard for value in values for shard in value.split(",") if shard] if values else None


@commands.command()
def train(developer: Developer,
          model: Annotated[str, typer.Option(help="the model to fine-tune")] = "llm-tiny",
          base: Annotated[str | None, typer.Option(help="model version to start from, 12 or more hex digits (default: the "
                                                       "served one, `gonka model list`)")] = None,
          shards: Annotated[list[str] | None, typer.Option(
              metavar="HASH", callback=_each_shard,
              help="corpus shards to train on, repeated or comma-separated (default: every training shard)")] = None,
          steps: Annotated[int, typer.Option(help="optimizer steps")] = 8,
          batch_size: Annotated[int, typer.Option(help="windows of the model's context per step")] = 4,
          learning_rate: Annotated[float, typer.Option(help="the optimizer's learning rate")] = 3e-3,
          seed: Annotated[int, typer.Option(help="draws the training windows")] = 0,
          max_price: Annotated[int, typer.Option(help="most base units per token processed")] = 100,
          nonce: Annotated[int | None, typer.Option(help="default: one above the developer's last nonce, counting the inbox")] = None,
          data_dir: DataDir = None) -> int:
    """Sign a training task with a developer key and put it in the inbox."""
    from gonka_pipelines.local.inbox import write_submission
    from gonka_pipelines.protocol.intake import Rejected, RejectReason
    from gonka_pipelines.simulation.client import checked_training

    layout = chain_folder(data_dir)
    keypair = _developer_key(layout, developer)
    with ChainStore.open(layout.database, read_only=True) as store:
        try:
            served = store.served_versions(store.head().height)
            if not base and model not in served:
                raise Rejected(RejectReason.UNKNOWN_MODEL_VERSION, f"the chain holds no version of model {model!r}")
            base_version = store.resolve_version(base, model) if base else served[model]
            chosen = shards or sorted(store.training_shards())
            raw, used_nonce = checked_training(store, layout.inbox, keypair, model=model, base_version=base_version, shards=chosen,
                                               steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                               max_price=max_price, nonce=nonce)
        except Rejected as error:
            print(f"error: not submitted, the collector would reject it: {error}", file=sys.stderr)
            return 2
    submission_id = write_submission(layout.inbox, raw)
    print(f"submitted training {submission_id} (nonce {used_nonce}): {steps} steps × {batch_size} windows of "
          f"{model} from version {base_version[:12]} on {len(chosen)} shard(s)")
    return 0


@commands.command()
def model(action: Annotated[Literal["list", "show"], typer.Argument(help="list every version, or show one with its lineage")],
          version: Annotated[str | None, typer.Argument(help="for show: 12 or more hex digits of a version")] = None,
          data_dir: DataDir = None) -> int:
    """Model versions: `list`, or `show VERSION` with its lineage down to shards."""
    from gonka_pipelines.protocol.intake import Rejected

    with ChainStore.open(chain_folder(data_dir).database, read_only=True) as store:
        rows, shards = store.version_rows(), store.shard_names()
        served = set(store.served_versions(store.head().height).values())
        try:
            version = "" if action == "list" else store.resolve_version(version or "")
        except Rejected as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if action == "list":
        print(f"{'version':14}{'model':10}{'epoch':>6}  {'parent':14}{'executor':14}{'final loss':>11}{'held-out':>10}")
        for r in rows:
            final = "-" if r["final_loss"] is None else f"{r['final_loss']:.4f}"
            print(f"{r['version'][:12]:14}{r['model']:10}{r['epoch']:>6}  {(r['parent'][:12] or 'genesis'):14}"
                  f"{(r['executor_name'] or '-'):14}{final:>11}{r['eval_loss']:>10.4f}{'  served' if r['version'] in served else ''}")
        return 0
    by_version = {r["version"]: r for r in rows}
    while version:
        r = by_version[version]
        origin = (f"trained in epoch {r['epoch']} by {r['executor_name']} (task {r['task_id'][:12]}) on "
                  + ", ".join(f"{shards.get(s, '?')} {s[:12]}" for s in r["shards"]) if r["parent"] else "genesis: seeded random weights")
        print(f"{version}  {r['model']}  held-out loss {r['eval_loss']:.4f}{'  (served)' if version in served else ''}\n    {origin}")
        version = r["parent"]
    return 0


@commands.command()
def run(ctx: typer.Context, epochs: Epochs = 1,
        verbose: Annotated[bool, typer.Option("-v", "--verbose", help="also print the stages' own logs")] = False,
        quiet: Annotated[bool, typer.Option("-q", "--quiet", help="one line per epoch, no line per stage")] = False,
        engine: Annotated[Literal["local", "ray"] | None, typer.Option(
            help="where hosts' model compute runs (default: resources/compute.yaml's, or $GONKA_COMPUTE_ENGINE)")] = None,
        ray_address: Annotated[str | None, typer.Option(
            help="the Ray cluster to join with --engine ray (default: compute.yaml's; none: start one in the run)")] = None,
        data_dir: DataDir = None) -> int:
    """Run the next epoch(s) through Dagster: a line per stage as it ends, then the run's page in the UI.

    On a terminal a progress bar counts the stages; -v adds the stages' own logs, -q prints only the epoch's line."""
    if verbose and quiet:
        ctx.fail("-v/--verbose and -q/--quiet exclude each other: give one or neither")
    return run_epochs(chain_folder(data_dir), epochs, progress=not quiet, verbose=verbose, engine=engine, ray_address=ray_address)


@commands.command()
def demo(epochs: Epochs = 3, profile: Profile = None, genesis: GenesisFile = GENESIS_FILE, network: NetworkFile = NETWORK_FILE,
         data_dir: DataDir = None) -> int:
    """Init, submit the demo workload and run epochs, then print a summary."""
    from gonka_pipelines.defs.launch import recorded_anchors
    from gonka_pipelines.simulation.workload import submit_demo_workload

    if init(profile, genesis, network, data_dir):
        return 1
    layout, demo_network = chain_folder(data_dir), load_network(network)
    for _ in range(epochs):
        with ChainStore.open(layout.database) as store:
            kinds = submit_demo_workload(store, layout, demo_network, store.head().height + 1)
        print(f"submitted {sum(kinds.values())} tasks: {dict(sorted(kinds.items()))}")
        if run_epochs(layout, 1):
            return 1
    anchors = recorded_anchors(layout) or {}
    with ChainStore.open(layout.database, read_only=True) as store:
        _print_summary(store)
        report = verify_chain(store, anchors)
    print(f"verify-chain: {report.blocks_verified} blocks verified" if report.first_problem is None else f"verify-chain: {report.first_problem}")
    return 0 if report.first_problem is None else 1


def _print_summary(store: ChainStore) -> None:
    from gonka_pipelines.reports.summary import HOSTS_LEGEND, block_summaries, format_hosts, format_summary, host_summaries

    print(format_summary(block_summaries(store)))
    print()
    print(format_hosts(host_summaries(store), store.genesis().token.base_units))
    print()
    print(HOSTS_LEGEND)


@commands.command()
def admit(limit: Annotated[int, typer.Option(min=1, help="check at most this many new inbox entries (a bundle is one)")] = 10_000_000,
          data_dir: DataDir = None) -> int:
    """Check the signatures of submissions that arrived since the last check, ahead of the epoch that takes them.

    The verdicts are remembered in DATA/admitted-signatures.tsv and the submissions kept read ahead (bytes and parsed
    fields) in DATA/admitted-signatures.spool/; the collector uses them only while the submission's bytes are those that
    were checked (the inbox sensor does the same on each tick)."""
    checked, waiting = admit_waiting(chain_folder(data_dir), limit)
    print(f"checked {checked:,} new signature(s) ahead of the epoch; {waiting:,} submission(s) wait in the inbox")
    return 0


@commands.command()
def summary(data_dir: DataDir = None) -> int:
    """One line per finalized block, then one line per host with its verdict."""
    with ChainStore.open(chain_folder(data_dir).database, read_only=True) as store:
        _print_summary(store)
    return 0


@commands.command("verify-chain")
def verify(full: Annotated[bool, typer.Option(
               "--full", help="re-derive every block, ignoring what earlier checks remembered (DATA/verified-blocks.json)")] = False,
           expect_head: Annotated[str | None, typer.Option(
               metavar="HASH", help="a block hash (12 or more hex digits) you kept: the chain must still hold it, finalized")] = None,
           no_dagster: Annotated[bool, typer.Option(
               "--no-dagster", help="do not compare with the block hashes the Dagster instance recorded")] = False,
           data_dir: DataDir = None) -> int:
    """Re-derive every hash, root and signature of blocks new or changed since the last check.

    Then compare with the block hashes kept outside the database (the Dagster instance's and --expect-head)."""
    from gonka_pipelines.defs.launch import recorded_anchors

    layout = chain_folder(data_dir)
    anchors = {} if no_dagster else (recorded_anchors(layout) or {})
    with ChainStore.open(layout.database, read_only=True) as store:
        if expect_head:
            height = store.height_of(expect_head)
            if height is None:
                print(f"INCONSISTENT no finalized block has hash {expect_head[:12]}…: the chain was cut short or rewritten",
                      file=sys.stderr)
                return 1
            anchors[height] = Anchor(expect_head, (anchors.get(height) or Anchor("")).signatures_hash)
        chain_id = store.chain_id
        memory = {} if full else load_verified(layout.verified_blocks, chain_id)
        report = verify_chain(store, anchors, memory)
        head_hash = store.head().hash if report.first_problem is None else ""
    if report.first_problem is not None:
        print(f"INCONSISTENT {report.first_problem}", file=sys.stderr)
        return 1
    try:
        save_verified(layout.verified_blocks, chain_id, report.verified)
    except OSError as error:
        print(f"note: could not remember the verified blocks ({error}); the next check re-derives them all", file=sys.stderr)
    pinned = f"; matches {len(anchors)} block hash(es) kept outside the database" if anchors else ""
    unchanged = report.blocks_verified - report.rederived
    memo = f" ({report.rederived} re-derived, {unchanged} unchanged since the last check)" if unchanged else ""
    print(f"ok: {report.blocks_verified} blocks verified{memo}, head {report.head} {head_hash}{pinned}")
    return 0


@commands.command()
def prove(table: Annotated[str, typer.Argument(
              help="the committed table, e.g. tasks, batches, results, rewards, accounts (an unknown one lists them)")],
          key: Annotated[str, typer.Argument(
              metavar="ID", help="the row's key, a unique prefix of it, or an account's name (for accounts, hosts, rewards)")],
          epoch: Annotated[int | None, typer.Option(
              help="the epoch whose block to prove against (default: the latest holding it)")] = None,
          data_dir: DataDir = None) -> int:
    """Merkle inclusion proof of a row against its block header (for a result or verdict, also against the one root
    its executor or validator signed)."""
    from gonka_pipelines.chain.proofs import prove_row

    with ChainStore.open(chain_folder(data_dir).database, read_only=True) as store:
        proof = prove_row(store, table, key, epoch)
    print(json.dumps(proof, indent=2))
    return 0 if proof["verified"] and proof.get("signed", {}).get("verified", True) else 1
