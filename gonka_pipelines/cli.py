"""The `gonka` command line: create a chain, submit tasks, run epochs through Dagster, verify and prove."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.chain.verify import Anchor, verify_chain
from gonka_pipelines.local.config import (
    GENESIS_FILE,
    NETWORK_FILE,
    ConfigError,
    load_genesis,
    load_network,
)
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.local.verified import load_verified, save_verified
from gonka_pipelines.protocol.crypto import KeyPair


def _layout(args: argparse.Namespace) -> DataLayout:
    return DataLayout(Path(args.data_dir).resolve()) if args.data_dir else DataLayout.from_env()


def cmd_init(args: argparse.Namespace) -> int:
    from gonka_pipelines.defs.launch import register_next_epoch
    from gonka_pipelines.stages.genesis import init_chain

    layout = _layout(args)
    params, network = load_genesis(args.profile, Path(args.genesis)), load_network(Path(args.network))
    with ChainStore.open(layout.database) as store:
        head = init_chain(store, layout, params, network)
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


def cmd_submit(args: argparse.Namespace) -> int:
    from gonka_pipelines.local.inbox import write_submission
    from gonka_pipelines.protocol.intake import Rejected
    from gonka_pipelines.simulation.client import checked_submission

    layout = _layout(args)
    keypair = _developer_key(layout, args.developer)
    with ChainStore.open(layout.database, read_only=True) as store:
        try:
            raw, nonce = checked_submission(store, layout.inbox, keypair, model=args.model, prompt=args.prompt,
                                            max_tokens=args.max_tokens, max_price=args.max_price, nonce=args.nonce,
                                            version=args.version or "")
        except Rejected as rejection:
            print(f"error: not submitted, the collector would reject it: {rejection}", file=sys.stderr)
            return 2
    submission_id = write_submission(layout.inbox, raw)
    print(f"submitted {submission_id} (nonce {nonce}) to {layout.inbox}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gonka_pipelines.local.inbox import write_submission
    from gonka_pipelines.protocol.intake import Rejected, RejectReason
    from gonka_pipelines.simulation.client import checked_training

    layout = _layout(args)
    keypair = _developer_key(layout, args.developer)
    with ChainStore.open(layout.database, read_only=True) as store:
        try:
            served = store.served_versions(store.head().height)
            if not args.base and args.model not in served:
                raise Rejected(RejectReason.UNKNOWN_MODEL_VERSION, f"the chain holds no version of model {args.model!r}")
            base = store.resolve_version(args.base, args.model) if args.base else served[args.model]
            shards = args.shards or sorted(store.training_shards())
            raw, nonce = checked_training(store, layout.inbox, keypair, model=args.model, base_version=base, shards=shards,
                                          steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                          seed=args.seed, max_price=args.max_price, nonce=args.nonce)
        except Rejected as error:
            print(f"error: not submitted, the collector would reject it: {error}", file=sys.stderr)
            return 2
    submission_id = write_submission(layout.inbox, raw)
    print(f"submitted training {submission_id} (nonce {nonce}): {args.steps} steps × {args.batch_size} windows of "
          f"{args.model} from version {base[:12]} on {len(shards)} shard(s)")
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from gonka_pipelines.protocol.intake import Rejected

    with ChainStore.open(_layout(args).database, read_only=True) as store:
        rows, shards = store.version_rows(), store.shard_names()
        served = set(store.served_versions(store.head().height).values())
        try:
            version = "" if args.action == "list" else store.resolve_version(args.version)
        except Rejected as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.action == "list":
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


class _StageProgress:
    """Reports each step of an epoch's run as it ends (its place, name, outcome and seconds): a line per step, and on a
    terminal a progress bar below them (rich) that counts the steps and the time. Use as a context manager."""

    def __init__(self, epoch: int, steps: int, console: Console | None = None):
        self.steps, self.done, self.last = steps, 0, time.perf_counter()
        self.console = console or Console(highlight=False)
        self.bar = Progress(TextColumn(f"epoch {epoch}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=self.console, transient=True) if self.console.is_terminal else None
        self.task = self.bar.add_task("starting", total=steps) if self.bar else None

    def __enter__(self) -> _StageProgress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, step: str, succeeded: bool) -> None:
        now, self.done = time.perf_counter(), self.done + 1
        line = f"  [{self.done}/{self.steps}] {step} {'done' if succeeded else 'FAILED'} in {now - self.last:.1f}s"
        self.last = now
        if self.bar is None or self.task is None:
            print(line, flush=True)
            return
        self.bar.console.print(line, markup=False)
        self.bar.update(self.task, advance=1, description=f"{step} {'done' if succeeded else 'FAILED'}")


def _next_epoch(layout: DataLayout) -> int:
    with ChainStore.open(layout.database, read_only=True) as store:
        return store.head().height + 1


def _run_epochs(layout: DataLayout, count: int, progress: bool = False, verbose: bool = False, engine: str | None = None,
                ray_address: str | None = None) -> int:
    """Run `count` epochs through Dagster, one line each; with progress, a line per stage as it ends (on a terminal with
    a progress bar under them; with verbose, the stages' own logs too) and the run's UI page; a failed run always names
    its page. engine and ray_address override resources/compute.yaml's for these runs."""
    from gonka_pipelines.defs.launch import dagster_instance, epoch_step_count, run_next_epoch
    from gonka_pipelines.defs.resources import ComputeResource

    instance = dagster_instance(layout)
    steps = epoch_step_count() if progress else 0
    compute = ComputeResource(engine=engine, ray_address=ray_address) if engine or ray_address else None
    for _ in range(count):
        started = time.perf_counter()
        epoch = _next_epoch(layout)
        with _StageProgress(epoch, steps) if progress else nullcontext() as on_step:
            run = run_next_epoch(layout, instance, "INFO" if verbose else "WARNING", on_step, compute)
        outcome = "succeeded" if run.success else f"REFUSED ({run.refused})" if run.refused else "FAILED"
        print(f"epoch {run.epoch}: run {run.run_id[:8]} {outcome} in {time.perf_counter() - started:.1f}s"
              + ("" if run.success and not progress else f"; in the UI ({_make_ui(layout)}): {_ui_url()}/runs/{run.run_id}"))
        if not run.success:
            return 1
    return 0


UI_PORT_ENV, DEFAULT_UI_PORT = "GONKA_UI_PORT", "3000"
"""`make ui UI_PORT=...` serves the Dagster UI on that port (3000 by default) and tells `gonka` through GONKA_UI_PORT."""
EXPLORER_PORT_ENV, DEFAULT_EXPLORER_PORT = "GONKA_EXPLORER_PORT", "8787"
"""`make explorer EXPLORER_PORT=...` serves the explorer on that port (8787 by default) through GONKA_EXPLORER_PORT."""


def _ui_url() -> str:
    return f"http://127.0.0.1:{os.environ.get(UI_PORT_ENV) or DEFAULT_UI_PORT}"


def _make_ui(layout: DataLayout) -> str:
    """The `make ui` command that shows this data folder's runs (the Makefile's DATA defaults to ./data)."""
    port = os.environ.get(UI_PORT_ENV) or DEFAULT_UI_PORT
    settings = ([] if layout.root == (Path.cwd() / "data").resolve() else [f"DATA={layout.root}"]) + (
        [] if port == DEFAULT_UI_PORT else [f"UI_PORT={port}"])
    return f"`{' '.join(['make ui', *settings])}`"


def cmd_run(args: argparse.Namespace) -> int:
    return _run_epochs(_layout(args), args.epochs, progress=not args.quiet, verbose=args.verbose, engine=args.engine,
                       ray_address=args.ray_address)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM stops a run as Ctrl-C does: the open transaction rolls back and the chain stays as it was."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_demo(args: argparse.Namespace) -> int:
    from gonka_pipelines.simulation.workload import submit_demo_workload

    if cmd_init(args):
        return 1
    layout, network = _layout(args), load_network(Path(args.network))
    for _ in range(args.epochs):
        with ChainStore.open(layout.database) as store:
            kinds = submit_demo_workload(store, layout, network, store.head().height + 1)
        print(f"submitted {sum(kinds.values())} tasks: {dict(sorted(kinds.items()))}")
        if _run_epochs(layout, 1):
            return 1
    from gonka_pipelines.defs.launch import recorded_anchors

    anchors = recorded_anchors(layout) or {}
    with ChainStore.open(layout.database, read_only=True) as store:
        _print_summary(store)
        report = verify_chain(store, anchors)
    print(f"verify-chain: {report.blocks_verified} blocks verified" if report.first_problem is None else f"verify-chain: {report.first_problem}")
    return 0 if report.first_problem is None else 1


def _print_summary(store: ChainStore) -> None:
    from gonka_pipelines.reports.summary import (
        HOSTS_LEGEND,
        block_summaries,
        format_hosts,
        format_summary,
        host_summaries,
    )

    print(format_summary(block_summaries(store)))
    print()
    print(format_hosts(host_summaries(store), store.genesis().token.base_units))
    print()
    print(HOSTS_LEGEND)


def cmd_summary(args: argparse.Namespace) -> int:
    with ChainStore.open(_layout(args).database, read_only=True) as store:
        _print_summary(store)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gonka_pipelines.defs.launch import recorded_anchors

    layout = _layout(args)
    anchors = {} if args.no_dagster else (recorded_anchors(layout) or {})
    with ChainStore.open(layout.database, read_only=True) as store:
        if args.expect_head:
            height = store.height_of(args.expect_head)
            if height is None:
                print(f"INCONSISTENT no finalized block has hash {args.expect_head[:12]}…: the chain was cut short or rewritten",
                      file=sys.stderr)
                return 1
            anchors[height] = Anchor(args.expect_head, (anchors.get(height) or Anchor("")).signatures_hash)
        chain_id = store.chain_id
        memory = {} if args.full else load_verified(layout.verified_blocks, chain_id)
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


def cmd_prove(args: argparse.Namespace) -> int:
    from gonka_pipelines.chain.proofs import prove_row

    with ChainStore.open(_layout(args).database, read_only=True) as store:
        proof = prove_row(store, args.table, args.id, args.epoch)
    print(json.dumps(proof, indent=2))
    return 0 if proof["verified"] else 1


def cmd_explain(args: argparse.Namespace) -> int:
    from gonka_pipelines.reports.explain import explain_payout, render_markdown, render_text

    with ChainStore.open(_layout(args).database, read_only=True) as store:
        explanation = explain_payout(store, args.host, args.epoch)
        base_units = store.genesis().token.base_units
    print(render_markdown(explanation) if args.markdown else render_text(explanation, base_units))
    return 0 if explanation.balanced else 1


def cmd_host(args: argparse.Namespace) -> int:
    from gonka_pipelines.reports.history import format_host_history

    with ChainStore.open(_layout(args).database, read_only=True) as store:
        print(format_host_history(store, args.host))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gonka_pipelines.local.inbox import submission_id_of, waiting_names
    from gonka_pipelines.reports.history import format_submission_fates

    if len(args.id) < MIN_ID_PREFIX:
        raise ConfigError(f"give at least {MIN_ID_PREFIX} characters of a submission or task id, got {args.id!r}")
    layout, prefix = _layout(args), args.id.lower()
    waiting = [w for w in map(submission_id_of, waiting_names(layout.inbox)) if w.startswith(prefix)]
    for submission_id in waiting:
        print(f"submission {submission_id}: waiting in the inbox ({layout.inbox}) for the next epoch to collect it")
    with ChainStore.open(layout.database, read_only=True) as store:
        text = format_submission_fates(store, prefix, missing_ok=bool(waiting))
    if text:
        print(text)
    return 0


MIN_ID_PREFIX = 6
"""The fewest characters of an id `gonka status` takes (fewer would match half the chain)."""


@contextmanager
def _scratch_folder(args: argparse.Namespace) -> Iterator[Path]:
    """Where the lab builds its scratch chain: --scratch (kept), else a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"gonka-{args.command}-") as temporary:
        yield Path(args.scratch) if args.scratch else Path(temporary) / "chain"


def cmd_replay(args: argparse.Namespace) -> int:
    from gonka_pipelines.lab.replay import replay_epoch

    started = time.perf_counter()
    with _scratch_folder(args) as scratch:
        replay = replay_epoch(_layout(args), args.epoch, scratch)
    took = f"{time.perf_counter() - started:.1f}s" + (f"; scratch chain kept in {scratch}" if args.scratch else "")
    if replay.identical:
        print(f"epoch {replay.epoch} replayed: block {replay.replayed_hash[:12]}… identical to the stored block ({took})")
        return 0
    where = (f"first difference in {replay.divergence}" if replay.divergence else
             "every committed row is the same: the header differs (parameters, timestamp or the signer set)")
    print(f"epoch {replay.epoch} replayed: block {replay.replayed_hash[:12]}…, the chain stores {replay.stored_hash[:12]}…: "
          f"DIVERGED: {where} ({took})")
    return 1


def cmd_what_if(args: argparse.Namespace) -> int:
    from gonka_pipelines.lab.fork import format_fork, what_if
    from gonka_pipelines.protocol.crypto import hash_value

    layout = _layout(args)
    out = Path(args.out) if args.out else layout.root / "lab" / (
        f"what-if-from-{args.from_height}-{hash_value([args.set or [], args.epochs])[:8]}")
    with _scratch_folder(args) as scratch:
        fork = what_if(layout, args.from_height, args.set or [], scratch, args.epochs)
        paths = fork.write(out)
    print(format_fork(fork))
    print(f"per-host diff: {', '.join(str(p) for p in paths)}" + (f"; scratch chain kept in {scratch}" if args.scratch else ""))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import polars as pl

    from gonka_pipelines.lab.sweep import load_sweep, plot_sweep, run_sweep, summarize
    from gonka_pipelines.stages.environment import quiet

    definition = load_sweep(Path(args.definition))
    out = Path(args.out) if args.out else _layout(args).root / "lab" / "sweeps" / definition.name
    started = time.perf_counter()
    results = run_sweep(definition, out, print if args.verbose else quiet)
    summary = summarize(definition, results)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4, tbl_hide_dataframe_shape=True):
        print(summary.select(*definition.grid, "seeds", *(c for c in summary.columns if c.endswith("_mean"))))
    plot = plot_sweep(definition, results, out / f"{definition.name}.png") if definition.plot else None
    timed: list[float] = (results.get_column("epoch_seconds_median").drop_nulls().to_list()
                          if "epoch_seconds_median" in results.columns else [])
    print(f"sweep {definition.name}: {len(results)} runs in {time.perf_counter() - started:.0f}s"
          + (f" (median epoch {statistics.median(timed):.2f}s)" if timed else "")
          + f"; results {out / 'results.parquet'}" + (f"; plot {plot}" if plot else ""))
    return 0


def cmd_security(args: argparse.Namespace) -> int:
    from gonka_pipelines.lab.security import STUDIES, markdown_table, plot_security, run_security
    from gonka_pipelines.stages.environment import quiet

    unknown = sorted(set(args.study or []) - set(STUDIES))
    if unknown:
        raise ConfigError(f"unknown study {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    out = Path(args.out) if args.out else _layout(args).root / "lab" / "security"
    started = time.perf_counter()
    results = run_security(args.trials, out, args.profile, args.study, print if args.verbose else quiet)
    for name in dict.fromkeys(results["study"].to_list()):
        rows = results.filter(results["study"] == name)
        print(f"\n{rows['attack'][0]} ({name})\n\n{markdown_table(rows)}")
    plots = plot_security(results, out)
    print(f"\nsecurity: {len(results)} settings × {args.trials:,} trials in {time.perf_counter() - started:.0f}s; results {out}; "
          + (f"plots {', '.join(str(p) for p in plots)}" if plots else "no plots (the plotted studies did not run)"))
    return 0


def cmd_explorer(args: argparse.Namespace) -> int:
    from gonka_pipelines.explorer.server import serve

    try:
        serve(_layout(args), args.host, args.port, on_ready=lambda line: print(line, flush=True))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {args.port} on {args.host} is in use: pick another with --port "
                              "(make explorer EXPLORER_PORT=...)") from None
        raise
    return 0


class Described(argparse.HelpFormatter):
    """Help that gives an option's default after its description, unless it has none or the description says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gonka", description=__doc__)
    data_dir_help = "chain folder (default: $GONKA_DATA_DIR, else ./data)"
    parser.add_argument("--data-dir", help=data_dir_help)
    after = argparse.ArgumentParser(add_help=False)  # --data-dir also after the command; SUPPRESS keeps one given before
    after.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_dir_help)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[after], formatter_class=Described, **kwargs)

    def chain_config(command: argparse.ArgumentParser) -> None:
        command.add_argument("--profile", help="genesis profile (default: the file's default_profile)")
        command.add_argument("--genesis", default=str(GENESIS_FILE), help="genesis parameters file")
        command.add_argument("--network", default=str(NETWORK_FILE), help="hosts and developers file")

    init = add_command("init", help="create the genesis block (no-op if it exists)")
    chain_config(init)
    init.set_defaults(handler=cmd_init)

    submit = add_command("submit", help="sign a task with a developer key and put it in the inbox")
    submit.add_argument("--developer", required=True, help="developer name (its key is data/keys/NAME.key)")
    submit.add_argument("--model", default="llm-tiny", help="the served model to run")
    submit.add_argument("--prompt", required=True, help="the prompt (at most tasks.max_prompt_bytes bytes)")
    submit.add_argument("--max-tokens", type=int, default=16, help="most tokens to generate")
    submit.add_argument("--max-price", type=int, default=100, help="most base units per token")
    submit.add_argument("--nonce", type=int, help="default: one above the developer's last accepted nonce")
    submit.add_argument("--version", help="model version to run, 12 or more hex digits (default: the one the network "
                                          "serves when the task runs, `gonka model list`)")
    submit.set_defaults(handler=cmd_submit)

    train = add_command("train", help="sign a training task with a developer key and put it in the inbox")
    train.add_argument("--developer", required=True, help="developer name (its key is data/keys/NAME.key)")
    train.add_argument("--model", default="llm-tiny", help="the model to fine-tune")
    train.add_argument("--base", help="model version to start from, 12 or more hex digits (default: the served one, "
                                      "`gonka model list`)")
    train.add_argument("--shards", nargs="+", metavar="HASH", help="corpus shards to train on (default: every training shard)")
    train.add_argument("--steps", type=int, default=8, help="optimizer steps")
    train.add_argument("--batch-size", type=int, default=4, help="windows of the model's context per step")
    train.add_argument("--learning-rate", type=float, default=3e-3, help="the optimizer's learning rate")
    train.add_argument("--seed", type=int, default=0, help="draws the training windows")
    train.add_argument("--max-price", type=int, default=100, help="most base units per token processed")
    train.add_argument("--nonce", type=int, help="default: one above the developer's last nonce, counting the inbox")
    train.set_defaults(handler=cmd_train)

    model = add_command("model", help="model versions: `list`, or `show VERSION` with its lineage down to shards")
    model.add_argument("action", choices=["list", "show"], help="list every version, or show one with its lineage")
    model.add_argument("version", nargs="?", default="", help="for show: 12 or more hex digits of a version")
    model.set_defaults(handler=cmd_model)

    run = add_command("run", help="run the next epoch(s) through Dagster")
    run.add_argument("--epochs", type=int, default=1, help="how many epochs to run")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also print the stages' own logs")
    loudness.add_argument("-q", "--quiet", action="store_true", help="one line per epoch, no line per stage")
    run.add_argument("--engine", choices=("local", "ray"), default=None,
                     help="where hosts' model compute runs (default: resources/compute.yaml's, or $GONKA_COMPUTE_ENGINE)")
    run.add_argument("--ray-address", default=None,
                     help="the Ray cluster to join with --engine ray (default: compute.yaml's; none: start one in the run)")
    run.set_defaults(handler=cmd_run)

    demo = add_command("demo", help="init, submit the demo workload and run epochs, then print a summary")
    chain_config(demo)
    demo.add_argument("--epochs", type=int, default=3, help="how many epochs to run")
    demo.set_defaults(handler=cmd_demo)

    add_command("summary", help="one line per finalized block").set_defaults(handler=cmd_summary)
    verify = add_command("verify-chain", help="re-derive every hash, root and signature of blocks new or changed since the "
                                              "last check; compare with the block hashes kept outside the database")
    verify.add_argument("--full", action="store_true",
                        help="re-derive every block, ignoring what earlier checks remembered (data/verified-blocks.json)")
    verify.add_argument("--expect-head", metavar="HASH",
                        help="a block hash (12 or more hex digits) you kept: the chain must still hold it, finalized")
    verify.add_argument("--no-dagster", action="store_true",
                        help="do not compare with the block hashes the Dagster instance recorded")
    verify.set_defaults(handler=cmd_verify)

    explain = add_command("explain", help="why HOST was paid what it was paid in EPOCH, amount by amount")
    explain.add_argument("host", help="host name (e.g. host-alpha) or address")
    explain.add_argument("epoch", type=int, help="a finalized epoch")
    explain.add_argument("--markdown", action="store_true", help="print Markdown (as the UI shows it) instead of text")
    explain.set_defaults(handler=cmd_explain)

    replay = add_command("replay", help="rebuild a finalized EPOCH into a scratch chain from what the chain "
                                                "stores and check that it seals the same block")
    replay.add_argument("epoch", type=int, help="a finalized epoch")
    replay.add_argument("--scratch", help="empty folder to build the scratch chain in, kept afterwards (default: a "
                                          "temporary folder, removed)")
    replay.set_defaults(handler=cmd_replay)

    fork = add_command("what-if", help="fork the chain at a height with changed parameters, re-run the stored "
                                              "epochs after it and print each host's outcome before and after")
    fork.add_argument("--from", dest="from_height", type=int, required=True, help="the height to fork from")
    fork.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                      help="a parameter change, repeatable (e.g. --set sprint.power_cap=0.15; values are YAML)")
    fork.add_argument("--epochs", type=int, help="how many stored epochs to re-run (default: all up to the head)")
    fork.add_argument("--out", help="folder for the per-host diff as Parquet and CSV (default: DATA/lab/what-if-from-H-<hash>)")
    fork.add_argument("--scratch", help="empty folder to build the forked chain in, kept afterwards (default: temporary)")
    fork.set_defaults(handler=cmd_what_if)

    sweep = add_command("sweep", help="run a sweep definition (grid × population × seeds, e.g. "
                                              "resources/sweeps/power-cap.yaml), resuming where it stopped; print and plot")
    sweep.add_argument("definition", help="the sweep's YAML file")
    sweep.add_argument("--out", help="results folder (default: DATA/lab/sweeps/NAME)")
    sweep.add_argument("--verbose", action="store_true", help="print each point as it finishes")
    sweep.set_defaults(handler=cmd_sweep)

    explorer = add_command("explorer", help="serve the read-only block explorer (overview, blocks, hosts, accounts, "
                                            "tasks, search) over the chain; it never waits on a running epoch")
    explorer.add_argument("--port", type=int, default=int(os.environ.get(EXPLORER_PORT_ENV) or DEFAULT_EXPLORER_PORT),
                          help=f"port to listen on (default: ${EXPLORER_PORT_ENV}, else {DEFAULT_EXPLORER_PORT})")
    explorer.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: only this machine)")
    explorer.set_defaults(handler=cmd_explorer)

    security = add_command("security", help="Monte Carlo detection power of every attack of PROTOCOL section 7 "
                                                    "through the rule set, with theory beside (docs/security.md)")
    security.add_argument("--trials", type=int, default=1000, help="trials per setting")
    security.add_argument("--study", action="append", help="run only this study (repeatable; default all)")
    security.add_argument("--profile", help="genesis profile whose parameters the rules use (default: the file's default)")
    security.add_argument("--out", help="results folder (default: DATA/lab/security); finished studies are not rerun")
    security.add_argument("--verbose", action="store_true", help="print each study as it finishes")
    security.set_defaults(handler=cmd_security)

    host = add_command("host", help="one host across every finalized epoch: sprint, weight, "
                                                             "status, tasks, reward, work coins, slashes, claim, payout (GNK)")
    host.add_argument("host", help="host name (or address)")
    host.set_defaults(handler=cmd_host)

    status = add_command("status", help="the fate of one submission: waiting, rejected with its "
                                                                 "reason, or its task's executor, verdicts, fee shares, refunds")
    status.add_argument("id", help=f"a prefix (at least {MIN_ID_PREFIX} characters) of a submission id or task id")
    status.set_defaults(handler=cmd_status)

    prove = add_command("prove", help="Merkle inclusion proof of a row against its block header")
    prove.add_argument("table", help="the committed table, e.g. tasks, batches, results, rewards, accounts (an unknown one "
                                     "lists them)")
    prove.add_argument("id", help="the row's key, a unique prefix of it, or an account's name (for accounts, hosts, rewards)")
    prove.add_argument("--epoch", type=int, help="the epoch whose block to prove against (default: the latest holding it)")
    prove.set_defaults(handler=cmd_prove)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return args.handler(args)
    except KeyboardInterrupt as interruption:
        print(f"interrupted ({interruption or 'SIGINT'}): the chain is as it was before the interrupted epoch's last write; "
              "`gonka run` takes the epoch up again", file=sys.stderr)
        return 130
    except (ChainError, ConfigError, FileExistsError, FileNotFoundError, PermissionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`gonka summary | head`): stop quietly, as a shell pipeline expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
