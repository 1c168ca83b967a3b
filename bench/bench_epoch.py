"""Epoch bookkeeping benchmark: every stage of an epoch on a generated network, model compute replaced by precomputed results.

    .venv/bin/python bench/bench_epoch.py [--hosts 1000] [--tasks 100000] [--epochs 1] [--quick]
                                          [--validation full|committee] [--committee-size 16] [--record-encoding json|columns]
                                          [--garbled-share 0.05] [--answer-tokens 8] [--max-tokens 12] [--bundle 1000]

A temporary chain (a tmp dir, removed afterwards unless --keep) gets N hosts of capacity 1 (honest, or a share of
them garbled_output executors with --garbled-share) and ~20 developers from a generated network.yaml, and a
genesis.yaml copied from resources/ with the `local` profile's numbers adjusted for the benchmark (small nonce budget
so the sprint is cheap, tasks_per_capacity raised so tasks do not expire, price as in `local`; tasks ask for as many
tokens as the stand-in answers, or --max-tokens, above which every task refunds). Before each epoch M signed tasks are
written to the inbox, a file each or --bundle of them to a file (the clients' cost, timed apart), and the node checks
their signatures as they arrive and keeps them read ahead (`local/admission.admit`, what `gonka admit` and the inbox
sensor do; timed apart too, `--no-admit` leaves the checks and the reading to the collect stage), then the epoch's
environment is built once and the
stages of gonka_pipelines.stages.registry run in order with
`PrecomputedCompute` (bench/precomputed.py) as the compute seam, each timed with time.perf_counter; the "stand-in s"
column is the part of a stage's seconds spent inside the stand-in's own calls (answers derived from prompt hashes),
which a real engine spends on its model instead.

Floor, measured in the same run (bench/floors.py): per stage, a raw Arrow append of the rows it wrote into plain
DuckDB tables of the same column types, plus its signatures at raw pynacl speed on all cores (every signed row it writes
as a sign, but the collect stage's, which developers signed before the epoch; the signatures it checks as verifies:
collect's, but those admitted ahead, and the sprint's batches), plus a raw Arrow read of the rows it reads in bulk
(execution, validation and rewards: a plain SELECT of them, no join or sort), plus SHA-256 over the buffers of the
records it signs through its signers' Merkle roots (results, verdicts), plus for block_proposal an Arrow read of the
epoch's committed columns with SHA-256 over their buffers. stage seconds / floor is how far a stage is from the
machine, and (stage seconds - stand-in s) / floor how far its bookkeeping is from the floor of that bookkeeping;
verify-chain's floor is the same read and hash plus a verify per committed signature.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_block
from gonka_pipelines.local.admission import admit
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.local.inbox import BUNDLE_SUFFIX, MAX_BUNDLE_LINES, SUFFIX, bundle_bytes, write_bundle, write_submission
from gonka_pipelines.local.keys import load_identities
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.simulation.client import sign_task
from gonka_pipelines.stages.environment import build_environment, holding, quiet
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.registry import STAGE_NAMES, STAGES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floors import (  # bench/floors.py
    ReadHashFloor,
    SignatureFloor,
    arrow_append_seconds,
    read_seconds,
    signed_records_hash_seconds,
    stage_floor,
)
from precomputed import (  # bench/precomputed.py, beside this script
    LABEL,
    OUTPUT_TOKENS,
    PrecomputedCompute,
)

PROFILE = "local"
CHAIN_ID = "gonka-bench-1"
MODEL = "llm-tiny"
GARBLED = "garbled_output"
NONCES_PER_CAPACITY = 128  # one PoC batch per host; ~6 hits at the calibrated 5 % hit rate
DEVELOPER_BALANCE = 10**14
_WORDS = ("summarise", "the", "ledger", "of", "epoch", "weights", "for", "host", "explain", "a", "merkle", "proof",
          "translate", "this", "sentence", "into", "french", "list", "three", "facts", "about", "gpus", "and", "tokens")


# ---------------------------------------------------------------- set-up


def write_genesis(path: Path, hosts: int, tasks: int, validation: str, committee_size: int, record_encoding: str) -> Path:
    """resources/genesis.yaml with the `local` profile adjusted for a cheap sprint and no mass task expiry."""
    data = yaml.safe_load((RESOURCES / "genesis.yaml").read_text())
    local = data["profiles"][PROFILE]
    local["chain_id"] = CHAIN_ID
    local["sprint"]["nonces_per_capacity"] = NONCES_PER_CAPACITY
    local["sprint"]["validation"], local["sprint"]["committee_size"] = validation, committee_size
    local["tasks"]["record_encoding"] = record_encoding
    # executors are drawn ∝ weight: leave each host 4x its fair share (at least 64) so almost nothing expires
    local["tasks"]["tasks_per_capacity"] = max(64, 4 * math.ceil(tasks / hosts))
    local["tasks"]["max_submissions_per_epoch"] = max(local["tasks"]["max_submissions_per_epoch"], 2 * tasks)
    data["default_profile"] = PROFILE
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_network(path: Path, hosts: int, developers: int, garbled_share: float = 0.0) -> Path:
    """N hosts of capacity 1 serving llm-tiny, `garbled_share` of them spread evenly answering with another model
    (garbled_output) and the rest honest, and developers with far more balance than they spend."""
    width = len(str(hosts - 1))
    network = {
        "key_seed": "bench-network",
        "hosts": [{"name": f"host-{i:0{width}d}", "capacity": 1, "models": [MODEL],
                   **({"behaviour": GARBLED} if int((i + 1) * garbled_share) > int(i * garbled_share) else {})}
                  for i in range(hosts)],
        "developers": [{"name": f"dev-{i:02d}", "balance": DEVELOPER_BALANCE} for i in range(developers)],
    }
    path.write_text(yaml.safe_dump(network, sort_keys=False))
    return path


def drop_in_inbox(inbox: Path, raws: list[bytes], bundled: bool) -> None:
    """write_submission's file (one submission) or write_bundle's, named by content hash, in one create; a
    byte-identical copy goes through them."""
    raw, suffix = (bundle_bytes(raws), BUNDLE_SUFFIX) if bundled else (raws[0], SUFFIX)
    try:
        fd = os.open(inbox / f"{sha256_hex(raw)}{suffix}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        write_bundle(inbox, raws) if bundled else write_submission(inbox, raw)
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)


def submit_tasks(layout: DataLayout, keys: list, nonces: list[int], count: int, epoch: int, max_tokens: int,
                 bundle: int) -> None:
    """count signed tasks of max_tokens each, round robin over the developers, dropped in the inbox a file each or
    `bundle` to a file (the clients' work)."""
    rng = random.Random(epoch)
    layout.inbox.mkdir(parents=True, exist_ok=True)
    raws: list[bytes] = []
    for i in range(count):
        developer = i % len(keys)
        prompt = f"task {epoch}.{i}: " + " ".join(rng.choices(_WORDS, k=rng.randint(4, 14)))
        raws.append(sign_task(keys[developer], CHAIN_ID, model=MODEL, prompt=prompt, max_tokens=max_tokens,
                              max_price=100, nonce=nonces[developer]))
        nonces[developer] += 1
        if len(raws) == bundle or i == count - 1:
            drop_in_inbox(layout.inbox, raws, bundle > 1)
            raws = []


# ---------------------------------------------------------------- measuring


def table_marks(store: ChainStore) -> dict[str, tuple[int, int]]:
    """(row count, highest rowid) of every table: rows a stage appends are those above the highest rowid before it."""
    tables = [name for (name,) in store._query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name")]
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*), coalesce(max(rowid), -1) FROM {t}" for t in tables)
    return {name: (count, top) for name, count, top in store._query(sql)}


def appended_rows(store: ChainStore, before: dict, after: dict) -> dict[str, pa.Table]:
    """The rows each table gained between two marks, as Arrow."""
    return {t: store._arrow(f"SELECT * FROM {t} WHERE rowid > ? ORDER BY rowid", [before.get(t, (0, -1))[1]])
            for t, (count, _) in after.items() if count > before.get(t, (0, -1))[0]}


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mib() -> float:
    """The process's peak resident set since the last reset_peak_rss, in MiB (VmHWM)."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024


def run_stage(name: str, step: Callable[[], object], profile: set[str], top: int,
              dump: Path | None = None) -> tuple[float, object]:
    """Time one stage; under --profile-stage also print its cProfile (profiled time is not the reported time) and, with
    --profile-dump, write it to DUMP/<stage>.pstats (DUMP: the epoch's folder) for pstats' callers and callees."""
    if name in profile:
        profiler = cProfile.Profile()
        profiler.enable()
        start = time.perf_counter()
        result = step()
        elapsed = time.perf_counter() - start
        profiler.disable()
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(dump / f"{name}.pstats")
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(top)
            print(f"\n--- cProfile of {name}, by {order} (profiled: {elapsed:.2f}s) ---")
            print("\n".join(line for line in text.getvalue().splitlines()[4:] if line.strip()))
        return elapsed, result
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def summarize(name: str, result: object) -> object:
    """A short printable form of a stage's result."""
    if name == "epoch_weights":
        return len(result)  # type: ignore[arg-type]
    if name == "rewards":
        return result[1]  # type: ignore[index]
    if name == "block_proposal":
        return result.hash[:16] + "…"  # type: ignore[attr-defined]
    if name == "block":
        return str(result)[:16] + "…"
    return result


def run_one_epoch(store: ChainStore, scratch: duckdb.DuckDBPyConnection, signatures: SignatureFloor, layout: DataLayout,
                  epoch: int, profile: set[str], top: int, checked_ahead: int,
                  answer_tokens: int = OUTPUT_TOKENS, dump: Path | None = None) -> tuple[list[dict], ReadHashFloor]:
    """The epoch's environment, then every stage of the registry in order; per stage: seconds, rows written, the parts
    of its floor, results. Also the epoch's read-and-hash floor (block_proposal's and verify-chain's)."""
    start = time.perf_counter()
    compute = PrecomputedCompute(store.genesis().sprint.model, store.head().hash, answer_tokens=answer_tokens)
    env = build_environment(store, layout, epoch, compute=compute)
    rows = [{"stage": "environment", "seconds": time.perf_counter() - start, "stand_in": 0.0, "peak_mib": peak_rss_mib(), "rows": 0,
             "tables": {},
             "floor_parts": {},
             "result": f"{len(env.hosts):,} hosts, {len(env.keys):,} keys"}]
    open_chain = holding(store)
    epoch_dump = dump / f"epoch-{epoch}" if dump is not None else None
    read_hash = None
    for stage in STAGES:
        before = table_marks(store)
        reset_peak_rss()
        stand_in_before = compute.seconds
        seconds, result = run_stage(stage.name, lambda: stage.run(env, open_chain, quiet), profile, top, epoch_dump)  # noqa: B023
        stand_in = compute.seconds - stand_in_before
        peak = peak_rss_mib()
        after = table_marks(store)
        written = appended_rows(store, before, after)
        if stage.name == "block_proposal":
            read_hash = ReadHashFloor.measure(store, epoch)
        parts = stage_floor(stage.name, written, arrow_append_seconds(scratch, written), signatures, read_hash, checked_ahead,
                            read_seconds(store, stage.name, epoch), signed_records_hash_seconds(written))
        rows.append({"stage": stage.name, "seconds": seconds, "stand_in": stand_in, "peak_mib": peak,
                     "rows": sum(t.num_rows for t in written.values()),
                     "tables": {t: r.num_rows for t, r in written.items()}, "floor_parts": parts,
                     "result": summarize(stage.name, result)})
        del written
    assert read_hash is not None, "the registry has a block_proposal stage"
    return rows, read_hash


# ---------------------------------------------------------------- report


def print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def report_epoch(epoch: int, client_seconds: float, tasks: int, bundle: int, stages: list[dict], read_hash: ReadHashFloor,
                 admission: tuple[int, float, float]) -> None:
    print(f"\nepoch {epoch}  ({LABEL})")
    table = [["client: sign + write inbox", f"{client_seconds:.3f}", "-", "-", f"{tasks:,} in {math.ceil(tasks / bundle):,} files",
              f"{tasks / client_seconds:,.0f}", "-", "-", "-", "-", "not the chain's cost"]]
    checked, admit_seconds, admit_floor = admission
    if checked:
        table.append(["node: admit (as tasks arrive)", f"{admit_seconds:.3f}", "-", "-", f"{checked:,} verdicts",
                      f"{checked / admit_seconds:,.0f}", f"{admit_floor:.3f}", f"{admit_seconds / admit_floor:.1f}x",
                      f"{admit_seconds / admit_floor:.1f}x", f"verify {admit_floor:.2f}", "not inside the epoch (gonka admit, the inbox sensor)"])
    for s in stages:
        biggest = sorted(s["tables"].items(), key=lambda kv: -kv[1])[:3]
        floor = sum(s["floor_parts"].values())
        table.append([s["stage"], f"{s['seconds']:.3f}", f"{s['stand_in']:.3f}" if s["stand_in"] else "-", f"{s['peak_mib']:,.0f}",
                      f"{s['rows']:,}",
                      f"{s['rows'] / s['seconds']:,.0f}" if s["rows"] else "-",
                      f"{floor:.3f}" if floor else "-", f"{s['seconds'] / floor:.1f}x" if floor else "-",
                      f"{(s['seconds'] - s['stand_in']) / floor:.1f}x" if floor else "-",
                      " ".join(f"{name} {value:.2f}" for name, value in s["floor_parts"].items() if value) or "-",
                      ", ".join(f"{t} {n:,}" for t, n in biggest) or "-"])
    total = sum(s["seconds"] for s in stages)
    total_rows = sum(s["rows"] for s in stages)
    total_floor = sum(sum(s["floor_parts"].values()) for s in stages)
    stand_in = sum(s["stand_in"] for s in stages)
    table.append(["epoch total (chain)", f"{total:.3f}", f"{stand_in:.3f}", f"{max(s['peak_mib'] for s in stages):,.0f}",
                  f"{total_rows:,}",
                  f"{total_rows / total:,.0f}", f"{total_floor:.3f}", f"{total / total_floor:.1f}x" if total_floor else "-",
                  f"{(total - stand_in) / total_floor:.1f}x" if total_floor else "-", "", ""])
    print_table(["stage", "seconds", "stand-in s", "peak MiB", "rows written", "rows/s", "floor s", "ratio", "bookkeeping ratio",
                 "floor parts (s)", "biggest tables written"], table, right={1, 2, 3, 4, 5, 6, 7, 8})
    print("floor = raw Arrow read of the rows it reads in bulk (execution, validation, rewards: bench/floors.py STAGE_READS) "
          "+ raw Arrow append of the rows written + SHA-256 of the buffers of the records it signs through Merkle roots "
          "+ raw Ed25519 signs of the rows it signs and verifies of those it "
          "checks (collect's developer signatures, the sprint's batches) on all cores "
          "+ for block_proposal the Arrow read and SHA-256 of the committed columns; ratio = stage / floor; "
          "bookkeeping ratio = (stage - stand-in s) / floor, the stage's own work against the floor of that work; "
          "peak MiB = the process's peak resident set during the stage; stand-in s = of the stage's seconds, those spent "
          f"in the compute stand-in's own calls (bench/precomputed.py; a real engine spends model time there): the "
          f"epoch's bookkeeping without them {total - stand_in:.3f}s")
    propose = next(s for s in stages if s["stage"] == "block_proposal")
    print(f"block_proposal writes few rows but reads and hashes every committed row of the epoch (Merkle roots): "
          f"{read_hash.rows:,} rows ({read_hash.bytes_hashed / 2**20:,.0f} MiB of column buffers, read and hashed in "
          f"{read_hash.seconds:.2f}s), {read_hash.rows / propose['seconds']:,.0f} rows/s")
    print("results: " + "; ".join(f"{s['stage']} {s['result']}" for s in stages))


def epoch_checks(store: ChainStore, epoch: int, tasks: int) -> list[str]:
    """What the network must show (all honest: nothing failed; with garbled executors: only their work failed, and some
    of it was caught); a failure means the benchmark measured a broken epoch."""
    def one(sql):
        return store._scalar(sql, [epoch])
    garbled = bool(store._scalar(f"SELECT count(*) FROM hosts WHERE behaviour = '{GARBLED}'"))
    honest_hosts = f"(SELECT address FROM hosts WHERE behaviour != '{GARBLED}')"
    facts = {
        "accepted tasks": one("SELECT count(*) FROM tasks WHERE epoch = ?"),
        "rejected submissions": one("SELECT count(*) FROM rejected_tasks WHERE epoch = ?"),
        "completed": one("SELECT count(*) FROM task_results WHERE epoch = ? AND status = 'completed'"),
        "expired": one("SELECT count(*) FROM task_results WHERE epoch = ? AND status = 'expired'"),
        "invalid PoC votes": one("SELECT count(*) FROM poc_verdicts WHERE epoch = ? AND NOT valid"),
        "hosts rejected in sprint": one("SELECT count(*) FROM epoch_weights WHERE epoch = ? AND NOT sprint_accepted"),
        "failed task verdicts": one("SELECT count(*) FROM task_verdicts WHERE epoch = ? AND NOT passed"),
        "invalidated": one("SELECT count(*) FROM task_outcomes WHERE epoch = ? AND outcome = 'invalidated'"),
        "INVALID hosts": one("SELECT count(*) FROM host_epochs WHERE epoch = ? AND status = 'INVALID'"),
        "refunds": one("SELECT count(*) FROM transfers WHERE epoch = ? AND stage = 'task_results'"),
    }
    honest_failures = {
        "failed verdicts on honest work": one(f"SELECT count(*) FROM task_verdicts v JOIN task_results r USING (task_id) "
                                              f"WHERE v.epoch = ? AND NOT v.passed AND r.executor IN {honest_hosts}"),
        "honest work invalidated": one(f"SELECT count(*) FROM task_outcomes WHERE epoch = ? AND outcome = 'invalidated' "
                                       f"AND executor IN {honest_hosts}"),
        "honest hosts INVALID": one(f"SELECT count(*) FROM host_epochs WHERE epoch = ? AND status = 'INVALID' "
                                    f"AND address IN {honest_hosts}"),
    }
    print("checks: " + ", ".join(f"{k} {v:,}" for k, v in facts.items()))
    problems = []
    if facts["accepted tasks"] != tasks or facts["rejected submissions"]:
        problems.append(f"expected {tasks} accepted tasks and no rejection")
    if facts["expired"] > tasks // 100:
        problems.append(f"{facts['expired']} tasks expired (more than 1 %)")
    for key, count in [("invalid PoC votes", facts["invalid PoC votes"]), *honest_failures.items()]:
        if count:
            problems.append(f"{key}: {count}")
    if garbled and not facts["invalidated"]:
        problems.append("garbled executors ran tasks, and none was invalidated")
    if not garbled and (facts["failed task verdicts"] or facts["invalidated"] or facts["INVALID hosts"]):
        problems.append("failed verdicts, invalidations or INVALID hosts on an all-honest network")
    return problems


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100_000, help="signed tasks submitted before each epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--developers", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100 hosts, 5,000 tasks (overrides --hosts/--tasks)")
    parser.add_argument("--validation", choices=("full", "committee"), default="full",
                        help="sprint validation: every validator checks every host, or a committee per host")
    parser.add_argument("--committee-size", type=int, default=16, help="validators per host under --validation committee")
    parser.add_argument("--record-encoding", choices=("json", "columns"), default="json",
                        help="tasks.record_encoding: results' and verdicts' record leaves as canonical JSON (the shipped "
                             "params) or hashed from Arrow columns")
    parser.add_argument("--garbled-share", type=float, default=0.0,
                        help="share of hosts whose executors answer with another model (garbled_output): their checked "
                             "tasks fail, the fail vote invalidates them, the hosts turn INVALID")
    parser.add_argument("--answer-tokens", type=int, default=OUTPUT_TOKENS,
                        help="tokens of every answer the stand-in gives (EOS included), each with its top-5 ids and "
                             "log-probs: the size of a task result")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="max_tokens of each task (default: --answer-tokens); more makes every task refund the rest "
                             "of its escrow, fewer cuts every answer short")
    parser.add_argument("--bundle", type=int, default=1,
                        help=f"tasks per inbox file: 1 writes NAME.json entries, more writes bundles (NAME.jsonl, a task a "
                             f"line, up to {MAX_BUNDLE_LINES:,}), as a gateway batching its developers' requests would")
    parser.add_argument("--keep", type=Path, default=None, help="build the chain in this (new) folder and keep it")
    parser.add_argument("--no-verify", action="store_true", help="skip re-deriving the blocks afterwards")
    parser.add_argument("--no-admit", action="store_true",
                        help="do not check the tasks' signatures as they arrive (gonka admit): the epoch's collect checks them")
    parser.add_argument("--profile-stage", action="append", default=[], choices=STAGE_NAMES,
                        help="cProfile this stage (repeatable) and print its hottest functions")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--profile-dump", type=Path, default=None,
                        help="with --profile-stage, also write each profiled stage's cProfile to DIR/epoch-N/<stage>.pstats "
                             "(python -m pstats reads it)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write each epoch's stages (seconds, peak MiB, rows, floor parts) and verify-chain's seconds and floor here")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.tasks = 100, 5_000
    if args.hosts < 1 or args.tasks < 1 or args.epochs < 1 or args.developers < 1:
        parser.error("--hosts, --tasks, --epochs and --developers must be positive")
    args.max_tokens = args.answer_tokens if args.max_tokens is None else args.max_tokens
    if not 1 <= args.bundle <= MAX_BUNDLE_LINES:
        parser.error(f"--bundle must be in 1..{MAX_BUNDLE_LINES:,}")
    if not 0 <= args.garbled_share < 0.5 or args.max_tokens < 1 or args.answer_tokens < 1:
        parser.error("--garbled-share must be in [0, 0.5) (a cheating majority is another study); --max-tokens and "
                     "--answer-tokens positive")

    print(f"bench_epoch: {args.hosts:,} hosts, {args.developers} developers, {args.tasks:,} tasks per epoch, "
          f"{args.epochs} epoch(s), {args.validation} sprint validation"
          f"{f' ({args.committee_size} per host)' if args.validation == 'committee' else ''}, {args.record_encoding} record leaves"
          f"{f', {args.garbled_share:.0%} of hosts garbled_output' if args.garbled_share else ''}; {LABEL}")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="gonka-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    try:
        genesis = load_genesis(PROFILE, write_genesis(workdir / "genesis.yaml", args.hosts, args.tasks, args.validation,
                                                       args.committee_size, args.record_encoding))
        network = load_network(write_network(workdir / "network.yaml", args.hosts, args.developers, args.garbled_share))
        layout = DataLayout(workdir / "data")
        signatures = SignatureFloor.measure()
        print(f"floor: raw Ed25519 on {signatures.cores} cores: sign {signatures.sign_seconds * 1e6:.1f} µs "
              f"({signatures.sign_range[0] * 1e6:.1f}-{signatures.sign_range[1] * 1e6:.1f}), verify "
              f"{signatures.verify_seconds * 1e6:.1f} µs ({signatures.verify_range[0] * 1e6:.1f}-"
              f"{signatures.verify_range[1] * 1e6:.1f}) per signature, median of 3 rounds")
        with ChainStore.open(layout.database) as store, duckdb.connect(str(workdir / "floor.duckdb")) as scratch:
            start = time.perf_counter()
            init_chain(store, layout, genesis, network)
            print(f"genesis (init_chain, {args.hosts + args.developers:,} key files): {time.perf_counter() - start:.2f}s; "
                  f"nonces_per_capacity {NONCES_PER_CAPACITY}, tasks_per_capacity {genesis.tasks.tasks_per_capacity}, "
                  f"max_tokens {args.max_tokens}, price {genesis.tasks.price_per_token}/token")
            identities = load_identities(layout, network, genesis.chain_id)
            developer_keys = [identities[d.name] for d in network.developers]
            nonces = [0] * len(developer_keys)
            grand_total, grand_stand_in, verify_floor = 0.0, 0.0, 0.0
            record = {"hosts": args.hosts, "tasks": args.tasks, "validation": args.validation, "record_encoding": args.record_encoding,
                      "garbled_share": args.garbled_share, "max_tokens": args.max_tokens,
                      "answer_tokens": args.answer_tokens, "bundle": args.bundle, "epochs": []}
            for epoch in range(1, args.epochs + 1):
                start = time.perf_counter()
                submit_tasks(layout, developer_keys, nonces, args.tasks, epoch, args.max_tokens, args.bundle)
                client_seconds = time.perf_counter() - start
                start, checked = time.perf_counter(), 0
                if not args.no_admit:
                    checked, _ = admit(layout.inbox, layout.admitted, genesis.chain_id, genesis.tasks.max_submission_bytes,
                                       args.tasks)
                admission = (checked, time.perf_counter() - start, checked * signatures.verify_seconds)
                stages, read_hash = run_one_epoch(store, scratch, signatures, layout, epoch, set(args.profile_stage),
                                                  args.profile_top, checked, args.answer_tokens, args.profile_dump)
                grand_total += sum(s["seconds"] for s in stages)
                grand_stand_in += sum(s["stand_in"] for s in stages)
                report_epoch(epoch, client_seconds, args.tasks, args.bundle, stages, read_hash, admission)
                record["epochs"].append([{k: s[k] for k in ("stage", "seconds", "stand_in", "peak_mib", "rows", "floor_parts")}
                                         for s in stages])
                record.setdefault("admission", []).append(dict(zip(("checked", "seconds", "floor"), admission)))
                verify_floor += read_hash.seconds + read_hash.signatures * signatures.verify_seconds
                problems += [f"epoch {epoch}: {p}" for p in epoch_checks(store, epoch, args.tasks)]
            if not args.no_verify:
                start = time.perf_counter()
                previous = store.block(0)["hash"]
                for height in range(1, args.epochs + 1):
                    if inconsistency := verify_block(store, height, previous):
                        problems.append(str(inconsistency))
                    previous = store.block(height)["hash"]
                record["verify_seconds"], record["verify_floor"] = time.perf_counter() - start, verify_floor
                print(f"\nverify (re-derive {args.epochs} block(s) from rows, not a stage): {record['verify_seconds']:.2f}s; "
                      f"floor {verify_floor:.2f}s (read and hash the committed columns, verify each committed signature on "
                      f"all cores), ratio {record['verify_seconds'] / verify_floor:.1f}x")
        print(f"\n{args.epochs} epoch(s) of {args.hosts:,} hosts and {args.tasks:,} tasks: {grand_total:.2f}s in the stages "
              f"({LABEL}), of which {grand_stand_in:.2f}s in the stand-in's own calls")
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
