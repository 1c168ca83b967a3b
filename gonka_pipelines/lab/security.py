"""Detection power of every attack of PROTOCOL section 7, measured by Monte Carlo through the rule set and compared with
theory where one exists.

A full chain per trial costs about a second; these studies need thousands of trials per setting. So each trial runs the
rule set's own decisions (the validation sample, the fraud vote, acceptance by weight, batch admission, the executor
and validator draws, the fail vote, host status) on what the models would have produced: an honest re-run reproduces a
claim exactly (CPU), a fake nonce recomputes as a hit only with the sprint's hit rate, and every check of a
cheaper-model, garbled or truncated output fails (docs/performance.md measured 100 % on the local profile). The fail vote is
counted by simulation.behaviours.Voters, as the task_verdicts stage counts it. The chain tests
(tests/stages/test_attacks.py and the modules beside it) pin that the stages take these same decisions.
Every trial's randomness is drawn from the study's name, setting and trial number.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.protocol.block import GENESIS_PREV_HASH
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, hash_value
from gonka_pipelines.protocol.inference_validation import MinAvg, ValidatorPool, validation_probability, validation_target
from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.poc_batches import BatchReject, PocBatch
from gonka_pipelines.protocol.rules import RuleSet, rules_for
from gonka_pipelines.protocol.sprint import binomial_tail, is_fraud
from gonka_pipelines.simulation.behaviours import Voters
from gonka_pipelines.stages.environment import epoch_parameters

HONEST_HITS = 50
"""Hits an honest host claims per sprint in these studies (a capacity-4 host of the local profile mines about 51)."""
HOSTS = 10
"""Hosts in a sprint study: the cheat and nine honest validators, equal weight."""
TASK_HOSTS = 20
"""Hosts in a task study: equal weight, so the host under study holds 1/20."""
HONEST_VOTERS = Voters(frozenset(), frozenset(), frozenset(), None)
"""A fail vote in which every host but the executor re-runs the task honestly."""
CHAIN_ID = "security-study"


@dataclass(frozen=True)
class Study:
    """The rules of one epoch (the profile's parameters at epoch 1) and the trials per setting."""

    rules: RuleSet
    trials: int

    @property
    def params(self) -> EpochParams:
        return self.rules.params

    def rngs(self, *setting: Any) -> Iterator[random.Random]:
        """One RNG per trial, seeded by the setting and the trial number."""
        for trial in range(self.trials):
            yield random.Random(f"{CHAIN_ID}|{setting}|{trial}")

    @property
    def reward_gnk(self) -> float:
        return self.rules.scheduled_reward() / self.params.token.base_units


def study_for(profile: str | None, trials: int) -> Study:
    return Study(rules_for(epoch_parameters(load_genesis(profile), 1)), trials)


def _hex(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


# ---------------------------------------------------------------- sprint: fake, padded and copied hits


def _vote(study: Study, key: str, prev_hash: str, nonces: list[int], misses: set[int]) -> bool:
    """An honest validator's vote on a claim: it samples with the rule's sampler, recomputes (a nonce in `misses`
    recomputes above r_target, any other exactly) and applies the fraud test."""
    r = study.params.r_target
    sample = study.rules.validation_sample(key, prev_hash, nonces)
    return study.rules.sprint_vote([r + 0.1 if n in misses else r - 0.1 for n in sample])[1]


def _accepted(study: Study, valid_weight: int, hits: int) -> bool:
    """Acceptance through the rule set's weights pipeline (HOSTS hosts of weight 1 in force)."""
    (row,) = study.rules.epoch_weights([{"address": "cheat", "hits": hits, "valid_vote_weight": valid_weight, "collateral": 0}],
                                       GENESIS_PREV_HASH, {f"h{i}": 1 for i in range(HOSTS)})
    return bool(row["sprint_accepted"])


def fraud_floor(study: Study, sampled: int) -> int:
    """The fewest misses among `sampled` recomputed claims that the fraud test calls fraud (sampled + 1: none)."""
    sprint = study.params.sprint
    return next((k for k in range(sampled + 1) if is_fraud(k, sampled, sprint.mismatch_probability, sprint.fraud_threshold)),
                sampled + 1)


def sprint_theory(study: Study, claims: int, fakes: int) -> tuple[float, float]:
    """(P a validator flags the claim, P the sprint is rejected): the sample of s = min(sample, claims) holds a
    hypergeometric number of fakes, each recomputing as a miss with 1 - hit rate; fraud from k_min misses (the binomial
    tail below the threshold). When every validator recomputes every claim they all vote alike, so the sprint is
    rejected exactly when one flags; otherwise the votes are taken as independent (their samples overlap, so this is
    an approximation) and it is rejected when the valid weight (the cheat's own vote plus the non-flagging validators)
    is at most half of HOSTS."""
    sprint = study.params.sprint
    s = min(sprint.validation_sample, claims)
    k_min = fraud_floor(study, s)
    miss = 1 - sprint.wanted_hit_rate
    flag = 0.0
    for j in range(max(0, s - (claims - fakes)), min(s, fakes) + 1):
        in_sample = math.comb(fakes, j) * math.comb(claims - fakes, s - j) / math.comb(claims, s)
        flag += in_sample * binomial_tail(k_min, j, miss)
    if s == claims:
        return flag, flag
    validators = HOSTS - 1
    need = validators - (HOSTS // 2 - 1)  # flags that leave valid weight 1 + (validators - flags) <= HOSTS // 2
    rejected = sum(math.comb(validators, x) * flag**x * (1 - flag) ** (validators - x) for x in range(need, validators + 1))
    return flag, rejected


def sprint_cheats(study: Study, fake_shares: Sequence[float], honest_hits: Sequence[int]) -> list[dict[str, Any]]:
    """fake_hits / inflated_hits / copied_nonces: a host with `hits` honest hits pads its claims so that `share` of
    them are fake (share 1: all fake, as fake_hits, or another host's hits under its own key, as copied_nonces). Above
    the validation sample (200 in the local profile) each validator sees only part of the claims.
    Caught = its sprint rejected. Honest cost: the honest validators who voted "valid" on a rejected sprint (their vote
    is contradicted, and our rule refuses their claim). Gain: its reward minus an honest host's, in GNK."""
    rows = []
    hit_rate = study.params.sprint.wanted_hit_rate
    measured: set[tuple[int, int]] = set()  # (honest hits, fakes): a share too small to change the count is run once
    for hits, share in itertools.product(honest_hits, fake_shares):
        honest = 0 if share >= 1 else hits
        fakes = hits if share >= 1 else max(1, round(hits * share / (1 - share)))
        if (honest, fakes) in measured:
            continue
        measured.add((honest, fakes))
        claims = honest + fakes
        caught = contradicted = 0
        gains = []
        for rng in study.rngs("sprint", share, hits):
            prev_hash = _hex(rng)
            nonces = rng.sample(range(10**12), claims)
            misses = {n for n in rng.sample(nonces, fakes) if rng.random() >= hit_rate}
            votes = [_vote(study, _hex(rng), prev_hash, nonces, misses) for _ in range(HOSTS - 1)]
            accepted = _accepted(study, 1 + sum(votes), claims)  # the cheat vouches for itself
            caught += not accepted
            contradicted += 0 if accepted else sum(votes)
            weight = claims if accepted else 0
            gains.append(study.reward_gnk * (weight / (weight + (HOSTS - 1) * hits) - 1 / HOSTS))
        flag, rejected = sprint_theory(study, claims, fakes)
        rows.append({"attack": "fake or padded hits", "setting": f"{hits} honest hits, fake share {share:g} ({fakes} of {claims} claims)",
                     "x": share, "hits": hits, "trials": study.trials, "caught_rate": caught / study.trials, "theory": rejected,
                     "theory_note": f"per-validator flag {flag:.4f}", "honest_flagged_rate": contradicted / (study.trials * (HOSTS - 1)),
                     "attacker_gain_gnk": float(np.mean(gains))})
    return rows


def honest_noise(study: Study, noise_rates: Sequence[float]) -> list[dict[str, Any]]:
    """An honest host whose re-runs differ (GPU non-determinism): each claim recomputes as a miss with `noise`. The
    fraud test is calibrated for noise = mismatch_probability; this measures how often it rejects an honest sprint."""
    rows = []
    for noise in noise_rates:
        flagged = 0
        for rng in study.rngs("noise", noise):
            prev_hash = _hex(rng)
            nonces = rng.sample(range(10**12), HONEST_HITS)
            misses = {n for n in nonces if rng.random() < noise}
            votes = [_vote(study, _hex(rng), prev_hash, nonces, misses) for _ in range(HOSTS - 1)]
            flagged += not _accepted(study, 1 + sum(votes), HONEST_HITS)
        sprint = study.params.sprint
        s = min(sprint.validation_sample, HONEST_HITS)
        k_min = fraud_floor(study, s)
        rows.append({"attack": "honest host, noisy re-runs", "setting": f"mismatch rate {noise:g}", "x": noise,
                     "trials": study.trials, "caught_rate": flagged / study.trials, "theory": binomial_tail(k_min, s, noise),
                     "theory_note": f"rejected iff the {s} claims hold ≥ {k_min} misses",
                     "honest_flagged_rate": flagged / study.trials, "attacker_gain_gnk": None})
    return rows


def admission_cheats(study: Study) -> list[dict[str, Any]]:
    """reused_nonces and late_batches: refused at admission (ours), whatever the draw; the trials confirm the rule."""
    rows = []
    sprint = study.params.sprint
    for attack, reason in (("reused nonces", BatchReject.DUPLICATE_NONCE), ("late batches", BatchReject.LATE)):
        refused = 0
        for rng in study.rngs("admission", attack):
            key, prev_hash = KeyPair.from_seed(rng.randbytes(32)), _hex(rng)
            nonces = tuple(rng.sample(range(10**12), 8))
            later = (sprint.duration_seconds + sprint.late_grace_seconds + rng.uniform(0.001, 60) if attack == "late batches"
                     else sprint.duration_seconds)
            second = nonces if attack == "reused nonces" else tuple(rng.sample(range(10**12), 8))
            batches = []
            for sequence, (claimed, at) in enumerate([(nonces, sprint.duration_seconds / 2), (second, later)]):
                batch = PocBatch(key.public_key, key.public_key, prev_hash, sequence, claimed, (0.0,) * len(claimed), at)
                signature = key.sign(CHAIN_ID, MessageKind.POC_BATCH, batch.body(study.params.epoch))
                batches.append(dataclasses.replace(batch, signature=signature))
            verdicts = study.rules.admit_batches(batches, CHAIN_ID, prev_hash)
            refused += verdicts[0] is None and verdicts[1] == reason
        rows.append({"attack": attack, "setting": f"{attack}: one extra batch of 8 claims", "x": 0.0, "trials": study.trials,
                     "caught_rate": refused / study.trials, "theory": 1.0, "theory_note": "refused at admission (ours)",
                     "honest_flagged_rate": 0.0, "attacker_gain_gnk": 0.0})
    return rows


# ---------------------------------------------------------------- tasks: who validates, and what it finds


@dataclass(frozen=True)
class TaskEpoch:
    """One trial's task traffic: TASK_HOSTS hosts of equal weight and reputation, the tasks' executors (drawn ∝ weight
    by the rule) and the validation draw (from fresh secret seeds)."""

    hosts: list[str]
    executors: list[str]
    task_index: np.ndarray
    validator_index: np.ndarray

    @property
    def weights(self) -> dict[str, int]:
        return dict.fromkeys(self.hosts, 1)

    def validators_of(self) -> list[set[int]]:
        checks: list[set[int]] = [set() for _ in self.executors]
        for t, v in zip(self.task_index.tolist(), self.validator_index.tolist()):
            checks[t].add(v)
        return checks


def task_epoch(study: Study, rng: random.Random, traffic: int, reputation: int) -> TaskEpoch:
    hosts = sorted(_hex(rng)[:40] for _ in range(TASK_HOSTS))
    task_ids = [_hex(rng) for _ in range(traffic)]
    executors = study.rules.assign_executors(_hex(rng), task_ids, hosts, [1] * TASK_HOSTS)
    pool = ValidatorPool(hosts, [_hex(rng) for _ in hosts], [1] * TASK_HOSTS, [reputation] * TASK_HOSTS)
    task_index, validator_index = study.rules.select_validations(executors, pool, traffic)
    return TaskEpoch(hosts, executors, task_index, validator_index)


def invalidated(study: Study, voters: Voters, weights: dict[str, int], executor: str, honestly_passes: bool) -> bool:
    """The stages' fail vote on a task that failed a check: the weight voting "invalid" (Voters, as the
    task_verdicts stage counts it) against the rule's quorum."""
    return study.rules.task_invalidated(voters.invalid_weights(weights, [(executor, honestly_passes)])[0], sum(weights.values()))


def _min_avg(study: Study) -> MinAvg:
    validation = study.params.validation
    return MinAvg(validation.min_avg_traffic, validation.min_avg_values)


def _p_validates(study: Study, traffic: int, reputation: int) -> float:
    """P_v of one host for a task of another (equal weights): min(1, target / (TASK_HOSTS - 1))."""
    target = validation_target(traffic, reputation, _min_avg(study))
    return float(validation_probability(target, 1, TASK_HOSTS, 1))


def skipped_validations(study: Study, traffics: Sequence[int], reputations: Sequence[int]) -> list[dict[str, Any]]:
    """skipped_validations / silent_validator: host 0 re-runs none of the tasks its seed draws it to validate. Caught =
    drawn for at least one (its claim then shows the validation missing and it forfeits the epoch's payout); theory:
    1 - prod over the others' tasks of (1 - P_v). Honest validators do what they were drawn for, so none is flagged."""
    rows = []
    for reputation in reputations:
        for traffic in traffics:
            caught, theory = 0, []
            p = _p_validates(study, traffic, reputation)
            for rng in study.rngs("skip", traffic, reputation):
                epoch = task_epoch(study, rng, traffic, reputation)
                skipper = epoch.hosts[0]
                caught += bool(np.any(epoch.validator_index == 0))
                theory.append(1 - (1 - p) ** sum(e != skipper for e in epoch.executors))
            rows.append({"attack": "skipped validations", "setting": f"traffic {traffic}, reputation {reputation}", "x": traffic,
                         "reputation": reputation, "trials": study.trials, "caught_rate": caught / study.trials,
                         "theory": float(np.mean(theory)), "theory_note": f"P_v = {p:.4f} per task", "honest_flagged_rate": 0.0,
                         "attacker_gain_gnk": -caught / study.trials * study.reward_gnk / TASK_HOSTS})
    return rows


def bad_executors(study: Study, traffics: Sequence[int], reputations: Sequence[int]) -> list[dict[str, Any]]:
    """cheaper_model / garbled_output / truncated_output: every validated task of host 0 fails a check and goes to the
    fail vote, where the other hosts re-run it. Caught = INVALID in the epoch (the rule's status on its counts: streak or z-test),
    which costs its reward and fees; otherwise it loses only the invalidated tasks' fees. Theory for "a task is
    checked": 1 - (1 - P_v)^(hosts - 1). Gain in GNK against serving honestly (fees at the profile's price for 20-token
    tasks), compute saved not counted."""
    rows = []
    fee = 20 * study.params.price_per_token / study.params.token.base_units
    for reputation in reputations:
        for traffic in traffics:
            invalid, checked, executed, gains = 0, 0, 0, []
            p_checked = 1 - (1 - _p_validates(study, traffic, reputation)) ** (TASK_HOSTS - 1)
            for rng in study.rngs("executor", traffic, reputation):
                epoch = task_epoch(study, rng, traffic, reputation)
                cheat = epoch.hosts[0]
                checks = epoch.validators_of()
                mine = [bool(checks[t]) for t, e in enumerate(epoch.executors) if e == cheat]
                validated = sum(mine)
                lost = validated if invalidated(study, HONEST_VOTERS, epoch.weights, cheat, honestly_passes=False) else 0
                status = study.rules.host_statuses(pl.DataFrame({
                    "consecutive_invalidations": [lost], "n_executed": [len(mine)], "n_validated": [validated],
                    "n_invalidated": [lost]}))["status"][0]
                invalid += status == "INVALID"
                checked, executed = checked + validated, executed + len(mine)
                honest_income = study.reward_gnk / TASK_HOSTS + fee * len(mine)
                income = 0.0 if status == "INVALID" else study.reward_gnk / TASK_HOSTS + fee * (len(mine) - lost)
                gains.append(income - honest_income)
            rows.append({"attack": "cheaper, garbled or truncated output", "setting": f"traffic {traffic}, reputation {reputation}",
                         "x": traffic, "reputation": reputation, "trials": study.trials, "caught_rate": invalid / study.trials,
                         "theory": None, "theory_note": f"tasks checked {checked / max(1, executed):.4f} (theory {p_checked:.4f})",
                         "honest_flagged_rate": 0.0, "attacker_gain_gnk": float(np.mean(gains))})
    return rows


def lazy_validators(study: Study, traffics: Sequence[int], bad_shares: Sequence[float]) -> list[dict[str, Any]]:
    """lazy_validator: host 0 votes "valid" without re-running. It is caught only when it passes a task that the fail
    vote invalidates: a bad executor's task that an honest validator checked too, so a check failed (its vote is then
    contradicted and its claim refused). Bad executors: the first round(share × hosts) of the others. Theory: per bad task, P(lazy drawn) ×
    P(some honest validator drawn), combined over the bad tasks."""
    rows = []
    for share in bad_shares:
        for traffic in traffics:
            caught, theory = 0, []
            p = _p_validates(study, traffic, 0)
            for rng in study.rngs("lazy", traffic, share):
                epoch = task_epoch(study, rng, traffic, 0)
                bad = set(epoch.hosts[1: 1 + round(share * TASK_HOSTS)])
                checks = epoch.validators_of()
                voters = Voters(frozenset(epoch.hosts[:1]), frozenset(), frozenset(), None)
                caught += any(0 in checks[t] and len(checks[t]) > 1 and invalidated(study, voters, epoch.weights, e, False)
                              for t, e in enumerate(epoch.executors) if e in bad)
                n_bad = sum(e in bad for e in epoch.executors)
                theory.append(1 - (1 - p * (1 - (1 - p) ** (TASK_HOSTS - 2))) ** n_bad)
            rows.append({"attack": "validators that always vote valid", "setting": f"traffic {traffic}, bad executors {share:g}",
                         "x": traffic, "bad_share": share, "trials": study.trials, "caught_rate": caught / study.trials,
                         "theory": float(np.mean(theory)), "theory_note": "", "honest_flagged_rate": 0.0,
                         "attacker_gain_gnk": -caught / study.trials * study.reward_gnk / TASK_HOSTS})
    return rows


def collusion(study: Study, weight_shares: Sequence[float]) -> list[dict[str, Any]]:
    """colluding: hosts holding at most `share` of the weight vote "invalid" on every task of one honest host. Per
    trial the weights are Pareto draws and the colluders are taken in random order while their weight stays within the
    share. A colluder's failing check sends the target's task to the stages' fail vote, where honest hosts re-run it
    and vote valid. Honest flagged = the target's task invalidated. No closed form: the note gives the realised share."""
    rows = []
    for share in weight_shares:
        flagged, shares = 0, []
        for rng in study.rngs("collusion", share):
            weights = {f"h{i}": max(1, round(rng.paretovariate(1.2) * 10)) for i in range(TASK_HOSTS)}
            total, order = sum(weights.values()), list(weights)[1:]
            colluding: set[str] = set()
            rng.shuffle(order)
            for host in order:
                if sum(weights[h] for h in colluding) + weights[host] <= share * total:
                    colluding.add(host)
            shares.append(sum(weights[h] for h in colluding) / total)
            flagged += invalidated(study, Voters(frozenset(), frozenset(), frozenset(colluding), "h0"), weights, "h0", True)
        rows.append({"attack": "colluding minority", "setting": f"colluders' weight share ≤ {share:g}", "x": share,
                     "trials": study.trials, "caught_rate": None, "theory": None,
                     "theory_note": f"realised share {float(np.mean(shares)):.3f}, max {max(shares):.3f}",
                     "honest_flagged_rate": flagged / study.trials, "attacker_gain_gnk": 0.0})
    return rows


STUDIES: dict[str, tuple[Callable[..., list[dict[str, Any]]], tuple[Any, ...]]] = {
    "sprint": (sprint_cheats, ((0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0), (HONEST_HITS, 1000))),
    "noise": (honest_noise, ((0.0, 0.0005, 0.005, 0.02, 0.05),)),
    "admission": (admission_cheats, ()),
    "skipped": (skipped_validations, ((10, 30, 100, 1000, 5000, 20000), (0, 100))),
    "executors": (bad_executors, ((20, 100, 1000, 5000, 20000), (0, 100))),
    "lazy": (lazy_validators, ((100, 1000), (0.0, 0.05, 0.2))),
    "collusion": (collusion, ((0.1, 0.3, 0.45, 0.5, 0.6),)),
}
"""Every study by name: its function and the settings it runs (after the Study)."""


def run_security(trials: int, out: Path, profile: str | None = None, only: list[str] | None = None,
                 log: Callable[[str], None] = lambda _: None) -> pl.DataFrame:
    """Run the studies (all, or `only`), each stored under out/ when done, named by what decides its rows (study,
    settings, trials, the parameters' hash): an interrupted run resumes with the studies it had not finished, and a
    changed profile or setting runs again."""
    out.mkdir(parents=True, exist_ok=True)
    study = study_for(profile, trials)
    frames = []
    for name in only or list(STUDIES):
        function, settings = STUDIES[name]
        path = out / f"{name}-{trials}-{hash_value([name, settings, trials, study.params.params_hash])[:12]}.parquet"
        if not path.exists():
            pl.DataFrame(function(study, *settings), infer_schema_length=None).write_parquet(path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            log(f"security: {name} done ({trials} trials per setting)")
        frames.append(pl.read_parquet(path).with_columns(pl.lit(name).alias("study")))
    return pl.concat(frames, how="diagonal_relaxed")


def markdown_table(rows: pl.DataFrame) -> str:
    """One study's rows as a Markdown table."""
    lines = ["| setting | trials | caught | theory | honest flagged | attacker gain (GNK/epoch) | note |",
             "|---|---:|---:|---:|---:|---:|---|"]

    def number(value: Any, digits: int = 4) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for row in rows.iter_rows(named=True):
        lines.append(f"| {row['setting']} | {row['trials']:,} | {number(row['caught_rate'])} | {number(row['theory'])} | "
                     f"{number(row['honest_flagged_rate'])} | {number(row['attacker_gain_gnk'], 2)} | {row['theory_note']} |")
    return "\n".join(lines)


def plot_security(results: pl.DataFrame, folder: Path) -> list[Path]:
    """PNGs: sprint detection vs fake share, skipped validations caught vs traffic, bad executors INVALID vs traffic
    (measured points, theory lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, x_label, groups in (("sprint", "share of claimed hits that are fake", "hits"),
                                  ("skipped", "tasks in the epoch (traffic)", "reputation"),
                                  ("executors", "tasks in the epoch (traffic)", "reputation")):
        rows = results.filter(pl.col("study") == name)
        if rows.is_empty():
            continue
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for key, group in rows.group_by(groups, maintain_order=True):
            label = f" ({groups} {key[0]})"
            axes.plot(group["x"], group["caught_rate"], marker="o", label=f"measured{label}")
            if group["theory"].drop_nulls().len():
                axes.plot(group["x"], group["theory"], linestyle="--", label=f"theory{label}")
        axes.set_xscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel("caught (share of trials)")
        axes.set_title(f"{rows['attack'][0]}: {rows['trials'][0]:,} trials per point", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = folder / f"security-{name}.png"
        figure.savefig(path, metadata={"Software": None})
        plt.close(figure)
        paths.append(path)
    return paths

