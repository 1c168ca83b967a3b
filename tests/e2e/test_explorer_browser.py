"""The block explorer end to end, in headless Chromium: `gonka explorer` over a copy of the demo chain, every page type
opened the way a user would (links and the search box), each payout's Merkle proof checked by the page itself, and a
page served while another process holds the chain's write lock.

Screenshots go to <repo>/artifacts/explorer-*.png (the README's docs/images/ are copied from there). Needs Debian's
/usr/bin/chromium; skipped without it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.paths import DataLayout

from dagster_server import BIN, free_port
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOLD_WRITE_LOCK = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


@pytest.fixture
def explorer_url(demo_layout: DataLayout, tmp_path: Path) -> Iterator[str]:
    """`gonka explorer` on a free loopback port over a copy of the demo chain; stopped by its PID afterwards."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: the browser test drives Debian's chromium (apt-get install chromium)")
    port = free_port()
    log = (tmp_path / "explorer.log").open("w")
    server = subprocess.Popen([str(BIN / "gonka"), "explorer", "--port", str(port), "--data-dir", str(demo_layout.root)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the explorer did not start:\n{(tmp_path / 'explorer.log').read_text()}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(timeout=30) == 0, (tmp_path / "explorer.log").read_text()
        log.close()


def search(page: Page, text: str) -> None:
    box = page.get_by_role("searchbox", name="Search")
    box.fill(text)
    box.press("Enter")


def test_every_page_type_and_the_search_box_in_a_browser(explorer_url: str, demo_layout: DataLayout):
    with ChainStore.open(demo_layout.database, read_only=True) as store:
        head = store.head()
        rejected = next(f for f in store.submission_fates("") if f["reason"] == "unknown_model")
        accepted = next(f for f in store.submission_fates("") if f["outcome"] == "accepted" and f["verdicts"])
        fake_address = store.resolve_host("host-fake")[1]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, base_url=explorer_url)
        page.set_default_timeout(30_000)
        loads: dict[str, float] = {}

        started = time.perf_counter()
        page.goto("/")
        loads["overview"] = time.perf_counter() - started
        expect(page.get_by_role("heading", name="Network overview")).to_be_visible()
        expect(page.get_by_role("link", name=str(head.height), exact=True).first).to_be_visible()
        shot(page, "explorer-overview.png")

        page.get_by_role("row").filter(has_text=head.hash[:12]).get_by_role("link").first.click()  # the head block
        expect(page.get_by_role("heading", name=f"Block {head.height}")).to_be_visible()
        expect(page.get_by_text(head.hash, exact=True)).to_be_visible()
        page.get_by_role("link", name=f"← block {head.height - 1}").click()
        expect(page.get_by_role("heading", name=f"Block {head.height - 1}")).to_be_visible()
        shot(page, "explorer-block.png")

        search(page, "host-alpha")  # a host by name: its page, every payout's proof checked by the page itself
        expect(page.get_by_role("heading", name="Host host-alpha")).to_be_visible()
        verdicts = page.locator("p.verdict")
        expect(verdicts).to_have_count(3)
        for index in range(3):
            expect(verdicts.nth(index)).to_have_text(re.compile(r"^verified ✓"))
        shot(page, "explorer-host.png")

        page.get_by_role("link", name=re.compile(r"^gonka1")).first.click()  # the host's account
        expect(page.get_by_role("heading", name="Account host-alpha")).to_be_visible()
        expect(page.get_by_text("Next task nonce")).to_be_visible()

        search(page, "dev-ada")
        expect(page.get_by_role("heading", name="Account dev-ada")).to_be_visible()
        shot(page, "explorer-account.png")

        search(page, rejected["submission_id"][:8])  # a submission's fate by id prefix
        expect(page.get_by_text(re.compile(r"^REJECTED in epoch"))).to_be_visible()
        expect(page.get_by_text("unknown_model", exact=True)).to_be_visible()

        search(page, accepted["task_id"][:10])
        expect(page.get_by_text(re.compile(r"^ACCEPTED in epoch"))).to_be_visible()
        expect(page.get_by_role("heading", name="Verdicts")).to_be_visible()
        shot(page, "explorer-task.png")

        search(page, fake_address[:12])  # a host's address: its host page
        expect(page.get_by_role("heading", name="Host host-fake")).to_be_visible()
        search(page, "no-such-thing")
        expect(page.get_by_text("nothing matches 'no-such-thing'")).to_be_visible()

        # An epoch's stage holds the write lock: the page still answers at once, from the last copy, and says so.
        writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(demo_layout.database)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "held"
            demo_layout.database.touch()
            time.sleep(2.5)  # two refresh ticks find the lock held
            started = time.perf_counter()
            page.goto("/host/host-fake")
            loads["host page, writer holding the lock"] = time.perf_counter() - started
            expect(page.get_by_role("status")).to_contain_text("An epoch is being written")
            expect(page.get_by_role("heading", name="Host host-fake")).to_be_visible()
            shot(page, "explorer-busy.png")
        finally:
            writer.communicate("", timeout=30)
        browser.close()
    # A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing: only loopback names are answered.
    rebound = urllib.request.Request(f"{explorer_url}/", headers={"Host": f"rebound.example:{explorer_url.rsplit(':', 1)[1]}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rebound, timeout=10)
    assert refused.value.code == 403
    print("\npage loads: " + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in loads.items()))
