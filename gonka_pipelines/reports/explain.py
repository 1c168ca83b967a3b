"""Why a host was paid what it was paid: the derivation of one payout from the rows behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.reports.units import TABLE_PLACES, gnk


@dataclass
class Explanation:
    """A payout and every amount it is made of; `lines` are (label, amount) pairs that sum to the payout."""

    host: str
    address: str
    epoch: int
    status: str
    claimed: bool
    payout: int
    reward: int
    work_coins: int
    lines: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return sum(amount for _, amount in self.lines) == self.payout


def explain_payout(store: ChainStore, host: str, epoch: int) -> Explanation:
    """Trace a host's payout in an epoch to the emission, its weight, its batches and its fee shares."""
    name, address = store.resolve_host(host)
    r = store.reward_row(epoch, address)
    if r is None:
        raise ChainError(f"epoch {epoch} has no rewards yet (run its rewards stage, or pick an earlier epoch)")
    emission, weight = store.emission(epoch), store.weight_row(epoch, address)
    batches = store.accepted_batches(epoch, address)
    params = store.epoch_params(epoch).emission
    first_paid = store.first_paid_address(epoch)
    share = emission["minted"] * r["weight"] // r["total_weight"] if r["total_weight"] else 0
    out = Explanation(name, address, epoch, r["status"], r["claimed"], r["payout"], r["reward"], r["work_coins"])
    out.notes += [
        f"R({epoch}) = floor({params.initial_reward} · exp(−{params.decay_rate} · ({epoch} − 1))) = {emission['scheduled']}; "
        f"minted {emission['minted']}",
        f"sprint: {weight['hits']} hits in {len(batches)} accepted batches ({', '.join(b[:10] + '…' for b, _ in batches) or 'none'}); "
        f"validators holding {weight['valid_vote_weight']} of the {weight['vote_weight']} weight asked to check it voted valid → "
        f"{'accepted' if weight['sprint_accepted'] else 'REJECTED'}; collateral-adjusted {weight['adjusted_weight']}; "
        f"power-capped {weight['weight']}",
        f"final weight {r['weight']} of {r['total_weight']}" + (" (status INVALID: weight 0, fees withheld)" if r["status"] == "INVALID" else ""),
    ]
    if r["claimed"]:
        if r["reward"]:
            out.lines.append((f"reward share floor({emission['minted']} · {r['weight']} / {r['total_weight']})", share))
            if r["reward"] != share:
                out.lines.append(("rounding remainder (first paid address)" if first_paid == address else "adjustment", r["reward"] - share))
        for task_id, role, amount, training in store.fee_shares_of(epoch, address):
            if r["work_coins"]:
                kind = f"training task {task_id[:12]}… {training}" if training else f"task {task_id[:12]}…"
                out.lines.append((f"work coins: {role} share of {kind}", amount))
    else:
        out.notes.append(f"claim refused (seed reveal or required validations failed): reward {r['reward']} and work coins "
                         f"{r['work_coins']} burned")
    if r["withheld"]:
        out.notes.append(f"fees withheld (INVALID) and burned: {r['withheld']}")
    if r["slashed"]:
        out.notes.append(f"collateral slashed: {r['slashed']}")
    return out


def render_markdown(explanation: Explanation) -> str:
    """The derivation as markdown: a header line, notes, and a table of amounts ending in the payout."""
    e = explanation
    lines = [f"### {e.host} — epoch {e.epoch}: payout {e.payout:,}",
             f"`{e.address}` · status **{e.status}** · claim {'accepted' if e.claimed else '**refused**'}", ""]
    lines += [f"- {note}" for note in e.notes]
    lines += ["", "| part | amount |", "|---|---:|"]
    lines += [f"| {label} | {amount:,} |" for label, amount in e.lines]
    lines.append(f"| **payout** | **{e.payout:,}** |")
    return "\n".join(lines)


def render_text(explanation: Explanation, base_units: int) -> str:
    """The derivation for a terminal: header, notes, then each amount in GNK and in base units, ending in the payout."""
    e = explanation
    width = max([len("payout"), *(len(label) for label, _ in e.lines)])
    amounts = [amount for _, amount in e.lines] + [e.payout]
    in_gnk = max(len("GNK"), *(len(gnk(a, base_units, TABLE_PLACES)) for a in amounts))
    in_units = max(len("base units"), *(len(f"{a:,}") for a in amounts))
    rule = "-" * (width + in_gnk + in_units + 2)
    lines = [f"{e.host}, epoch {e.epoch}: payout {gnk(e.payout, base_units)} GNK",
             f"address {e.address}, status {e.status}, claim {'accepted' if e.claimed else 'REFUSED'}", ""]
    lines += [f"  {note}" for note in e.notes]
    lines += ["", f"  {'part':<{width}} {'GNK':>{in_gnk}} {'base units':>{in_units}}", f"  {rule}"]
    lines += [f"  {label:<{width}} {gnk(amount, base_units, TABLE_PLACES):>{in_gnk}} {amount:>{in_units},}" for label, amount in e.lines]
    lines += [f"  {rule}", f"  {'payout':<{width}} {gnk(e.payout, base_units, TABLE_PLACES):>{in_gnk}} {e.payout:>{in_units},}"]
    return "\n".join(lines)
