"""The explorer's pages over the demo chain, rendered in-process: the numbers they show are the chain's, search finds
each kind of thing, unknown things are a 404 naming what exists, and a writer holding the chain never blocks a page."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from base64 import b64decode
from html import unescape
from http import HTTPStatus
from pathlib import Path

import pytest

from gonka_pipelines.chain.store import ChainBusyError, ChainStore
from gonka_pipelines.explorer.server import Explorer
from gonka_pipelines.explorer.snapshot import ChainSnapshot
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.merkle import MerkleProof, verify_proof
from gonka_pipelines.reports.units import gnk


@pytest.fixture
def explorer(demo_template: DataLayout, tmp_path: Path) -> Explorer:
    snapshot = ChainSnapshot(demo_template.database, tmp_path / "snapshot")
    assert snapshot.refresh()
    return Explorer(demo_template, snapshot)


def page_text(explorer: Explorer, target: str, status: HTTPStatus = HTTPStatus.OK) -> str:
    page = explorer.respond(target)
    assert page.status == status, page.body.decode()[-600:]
    return page.body.decode()


def amount(units: int) -> str:
    """How a page shows an amount: GNK with separators, the base units in its title."""
    return f'<span class="amount" title="{units:,} base units">{gnk(units, 10**9)}</span>'


def test_overview_shows_the_head_the_supply_that_adds_up_and_every_host(explorer: Explorer, demo_template: DataLayout):
    html = page_text(explorer, "/")
    with ChainStore.open(demo_template.database, read_only=True) as store:
        head, supply, hosts = store.head(), store.supply(3), store.host_table(3)
    assert head.height == 3
    assert supply["total"] == supply["genesis"] + supply["minted"] - supply["burned"]
    assert supply["total"] == supply["circulating"] + supply["escrow"] + supply["locked"] + supply["collateral"] + supply["unclaimed"]
    assert supply["minted"] > 0 and supply["burned"] > 0
    for key in ("total", "minted", "burned", "circulating"):
        assert amount(supply[key]) in html
    assert head.hash[:12] in html
    assert [h["weight"] for h in hosts] == sorted((h["weight"] for h in hosts), reverse=True)  # heaviest first
    assert len(hosts) == 9 and all(f'href="/host/{h["name"]}"' in html for h in hosts)
    assert all(f'href="/block/{height}"' in html for height in range(4))


def test_block_page_counts_what_each_root_commits_and_names_its_signers(explorer: Explorer, demo_template: DataLayout):
    html = page_text(explorer, "/block/2")
    with ChainStore.open(demo_template.database, read_only=True) as store:
        block, counts, weights = store.block(2), store.committed_counts(2), store.weights(1)
    for name, root in block["header"]["roots"].items():
        assert re.search(rf"<td>{name}</td><td class=\"num\">{counts[name]:,}</td><td class=\"id\">{root}</td>", html)
    signed = sum(s["weight"] for s in block["signatures"])
    assert 3 * signed > 2 * sum(weights.values())
    assert f"holding {signed:,} of {sum(weights.values()):,} weight" in html
    assert 'rel="prev" href="/block/1"' in html and 'rel="next" href="/block/3"' in html
    assert counts["tasks"] > 0 and counts["rejections"] > 0


def test_host_page_charts_every_epoch_and_embeds_proofs_that_climb_to_the_header_root(explorer: Explorer,
                                                                                     demo_template: DataLayout):
    html = page_text(explorer, "/host/host-alpha")
    with ChainStore.open(demo_template.database, read_only=True) as store:
        _, address = store.resolve_host("host-alpha")
        history = store.host_history(address)
        roots = {e: store.block(e)["header"]["roots"]["rewards"] for e in (1, 2, 3)}
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert html.count('<svg class="chart"') == 7 and html.count('<svg class="strip"') == 3
    for row in history:
        assert f"<title>epoch {row['epoch']}: {row['weight']:,}</title>" in html  # the weight chart's points
        assert amount(row["payout"]) in html
    proofs = re.findall(r'<div class="proof" data-epoch="(\d+)" data-leaf-bytes="([^"]+)" data-leaf="([0-9a-f]+)"\s+'
                        r'data-root="([0-9a-f]+)" data-steps=\'([^\']*)\'', html)
    assert sorted(int(p[0]) for p in proofs) == [1, 2, 3]
    for epoch, leaf_bytes, leaf, root, steps in proofs:
        assert root == roots[int(epoch)]
        assert hashlib.sha256(b"\x00" + b64decode(leaf_bytes)).hexdigest() == leaf
        assert f'"payout":{next(r["payout"] for r in history if r["epoch"] == int(epoch))}' in b64decode(leaf_bytes).decode()
        parsed = MerkleProof(0, 0, tuple(tuple(step) for step in json.loads(unescape(steps))))
        assert verify_proof(leaf, parsed, root)


def test_one_epoch_of_a_host_and_an_epoch_it_has_not(explorer: Explorer):
    html = page_text(explorer, "/host/host-fake?epoch=2")
    assert 'id="payout-2"' in html and 'id="payout-1"' not in html and "REFUSED" in html
    assert "its epochs: 1, 2, 3" in unescape(page_text(explorer, "/host/host-fake?epoch=7", HTTPStatus.NOT_FOUND))


def test_account_page_shows_balances_after_the_head_and_the_next_nonce(explorer: Explorer, demo_template: DataLayout):
    with ChainStore.open(demo_template.database, read_only=True) as store:
        address = next(a for a, n in store.account_names().items() if n == "dev-ada")
        view = store.account_view(address, 3)
        nonces = store.developer_nonces("dev-ada")
    assert view["next_nonce"] == max(nonces) + 1
    html = page_text(explorer, "/account/dev-ada")
    assert page_text(explorer, f"/account/{address}") == html
    assert amount(view["balance"]) in html and f"<strong>{max(nonces) + 1}</strong>" in html
    assert view["transfers"] and all(t["epoch"] <= 3 for t in view["transfers"])


def test_search_goes_straight_to_the_one_match_and_lists_several(explorer: Explorer, demo_template: DataLayout):
    with ChainStore.open(demo_template.database, read_only=True) as store:
        rejected = store.submission_fates("")
    fate = next(f for f in rejected if f["reason"] == "prompt_too_long")
    for query, location in (("3", "/block/3"), ("host-alpha", "/host/host-alpha"), ("HOST-ALPHA", "/host/host-alpha"),
                            (fate["submission_id"][:10], f"/task/{fate['submission_id']}"),
                            (fate["submission_id"][:10].upper(), f"/task/{fate['submission_id']}")):
        page = explorer.respond(f"/search?q={query}")
        assert (page.status, page.location) == (HTTPStatus.SEE_OTHER, location), query
    task = unescape(page_text(explorer, f"/task/{fate['submission_id'][:10]}"))
    assert "REJECTED in epoch" in task and "prompt_too_long" in task
    several = page_text(explorer, "/search?q=gonka1")
    assert re.search(r"<h1>(\d+) matches", several) and int(re.search(r"<h1>(\d+) matches", several).group(1)) >= 9
    missing = unescape(page_text(explorer, "/search?q=nothing-like-this", HTTPStatus.NOT_FOUND))
    assert "nothing matches 'nothing-like-this'" in missing


def test_unknown_things_are_404s_that_say_what_exists(explorer: Explorer):
    assert "the head is 3" in page_text(explorer, "/block/99", HTTPStatus.NOT_FOUND)
    assert "hosts: host-alpha, host-bravo" in unescape(page_text(explorer, "/host/nobody", HTTPStatus.NOT_FOUND))
    assert "6 or more hex digits" in page_text(explorer, "/task/ab", HTTPStatus.NOT_FOUND)
    assert "no page at /nope" in page_text(explorer, "/nope", HTTPStatus.NOT_FOUND)
    for target in ("/static/..%2Fserver.py", "/static/.hidden", "/static/%2Fetc%2Fpasswd"):
        assert explorer.respond(target).status == HTTPStatus.NOT_FOUND, target
    for target in ("/block/²", "/block/" + "9" * 5000, "/host/host-alpha?epoch=²"):
        assert explorer.respond(target).status == HTTPStatus.NOT_FOUND, target
    assert "nothing matches '²'" in unescape(page_text(explorer, "/search?q=²", HTTPStatus.NOT_FOUND))
    assert explorer.respond("/static/proof.js").content_type.startswith("text/javascript")


HOLD_WRITE_LOCK = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def test_a_writer_holding_the_chain_never_blocks_a_page(demo_layout: DataLayout, tmp_path: Path):
    """While another process holds the write lock (as an epoch's stage does), pages answer from the last copy and say
    so; once it lets go, the next refresh copies what it wrote."""
    snapshot = ChainSnapshot(demo_layout.database, tmp_path / "snapshot")
    assert snapshot.refresh()
    explorer = Explorer(demo_layout, snapshot)
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(demo_layout.database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        with pytest.raises(ChainBusyError), ChainStore.open(demo_layout.database, read_only=True, lock_wait=0.5):
            pass
        demo_layout.database.touch()  # the file changed: a refresh must try, and find the lock held
        assert not snapshot.refresh()
        assert snapshot.freshness.writer_busy_since is not None
        html = page_text(explorer, "/")
        assert "An epoch is being written" in html and "showing block 3" in html
    finally:
        writer.communicate("", timeout=30)
    assert snapshot.refresh()
    assert snapshot.freshness.writer_busy_since is None
    assert "An epoch is being written" not in page_text(explorer, "/")


def test_submissions_of_an_epoch_not_yet_finalized_are_not_shown(proposed_layout: DataLayout, tmp_path: Path):
    """The explorer shows finalized state only: a proposed epoch's submissions are neither found nor shown (a re-run
    may still replace them); `gonka status` keeps showing them, marked open."""
    snapshot = ChainSnapshot(proposed_layout.database, tmp_path / "snapshot")
    assert snapshot.refresh()
    explorer = Explorer(proposed_layout, snapshot)
    with ChainStore.open(proposed_layout.database, read_only=True) as store:
        (fate, *_) = store.submission_fates("")
        assert fate["epoch"] == 1 and fate["block"] != "finalized"
        assert store.submission_fates(fate["submission_id"], finalized_only=True) == []
    assert "of a finalized epoch" in unescape(page_text(explorer, f"/task/{fate['submission_id'][:12]}", HTTPStatus.NOT_FOUND))
    assert explorer.respond(f"/search?q={fate['submission_id'][:12]}").status == HTTPStatus.NOT_FOUND


def test_a_copy_cut_short_leaves_no_file_and_the_next_refresh_succeeds(demo_layout: DataLayout, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    snapshot = ChainSnapshot(demo_layout.database, tmp_path / "snapshot")

    def disk_full(source, target):
        Path(target).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        snapshot.refresh()
    assert list((tmp_path / "snapshot").iterdir()) == []
    monkeypatch.undo()
    assert snapshot.refresh() and snapshot.freshness.height == 3


def test_a_bundles_lines_are_found_and_shown_under_their_ids(genesis_layout: DataLayout, submit, tmp_path: Path):
    """A bundle line's id holds a '/' (NAME/LINE): search links it escaped, and its page opens."""
    from support.chains import run_stages

    bundle = submit.bundle([submit.sign(nonce=0), b"not json"])
    with ChainStore.open(genesis_layout.database) as store:
        run_stages(store, genesis_layout, 1)
    snapshot = ChainSnapshot(genesis_layout.database, tmp_path / "snapshot")
    assert snapshot.refresh()
    explorer = Explorer(genesis_layout, snapshot)
    listing = unescape(page_text(explorer, f"/search?q={bundle[:12]}"))
    assert f'href="/task/{bundle}%2F1"' in listing and "<h1>2 matches" in listing
    rejected = unescape(page_text(explorer, f"/task/{bundle}%2F1"))
    assert "REJECTED in epoch" in rejected and "malformed" in rejected
