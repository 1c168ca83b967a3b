"""The Dagster UI end to end, in headless Chromium: launch epoch 1 from the browser, watch it succeed, read the payouts.

A real `dg dev` (webserver and daemon; code location gonka_pipelines.definitions) serves a fresh chain in tmp_path
with a few submitted tasks. The test clicks through the UI the way an operator would:

1. Lineage → fold the group list → graph settings (gear, bottom right) → "Expand all groups": the nine stage assets
   and the training group (screenshot artifacts/asset-graph.png).
2. From the landing page, three clicks: Jobs → next_epoch → "Materialize" (artifacts/launch-epoch.png); the launcher
   sensor starts the `epoch` run of partition 1 (no partition picked by hand).
3. That run's page, until it says "Success" (artifacts/epoch-run.png).
4. Catalog → rewards → Partitions → "1": the `payouts` table of the materialization (artifacts/rewards-lineage.png),
   then `derivations` → "[Show Markdown]": each host's payout, amount by amount (artifacts/rewards-derivation.png).
5. Catalog → model_versions → Partitions → "1": the version the epoch's training order produced, its held-out loss and
   its lineage (artifacts/model-versions.png).

Then, with the server stopped, the chain must be at height 1 and hold exactly the payouts the UI showed.
Screenshots go to <repo>/artifacts/ (git-ignored; the README's docs/images/ are copied from there). Needs Debian's
/usr/bin/chromium (`make chromium`; Playwright's own browser download is not used); skipped without it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import load_network
from gonka_pipelines.reports.units import gnk

from dagster_server import REPO_ROOT, DagsterDevServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "artifacts"
VIEWPORT = {"width": 1600, "height": 1200}
UI_TIMEOUT_MS = 60_000      # a page or the code location loading on a busy 2-core machine
LAUNCH_TIMEOUT_S = 120      # the launcher sensor answering a request (every 5 s, more on a busy machine)
RUN_TIMEOUT_MS = 240_000    # one epoch of a few tasks: ~10-40 s alone, more when other tests share the CPUs
PAYOUT_COLUMNS = ["host", "status", "weight", "share", "reward (GNK)", "work coins (GNK)", "withheld (GNK)", "claim", "payout (GNK)",
                  "payout (base units)"]
SUBMISSIONS = [("dev-ada", "Summarize the rules of chess."), ("dev-grace", "Name three prime numbers."),
               ("dev-linus", "What is a Merkle tree?"), ("dev-ada", "Translate 'hello' into French."),
               ("dev-grace", "Write a haiku about GPUs."), ("dev-linus", "hello")]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: the browser test drives Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def dagster_ui(chromium: Path, tmp_path: Path) -> Iterator[DagsterDevServer]:
    """`gonka init` and a few `gonka submit`s on a chain in tmp_path, then `dg dev` over it; stopped afterwards."""
    server = DagsterDevServer(tmp_path / "chain", log_dir=tmp_path)
    server.gonka("init")
    for developer, prompt in SUBMISSIONS:
        server.gonka("submit", "--developer", developer, "--prompt", prompt)
    server.gonka("train", "--developer", "dev-ada")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        print(f"\ndg dev stopped in {server.stop_seconds:.1f}s ({'SIGKILL needed' if server.killed else 'SIGTERM'}); "
              f"log: {server.log_path}")


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def open_browser_page(playwright, base_url: str) -> Page:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=VIEWPORT, base_url=base_url)
    page.set_default_timeout(UI_TIMEOUT_MS)
    # A fresh Dagster instance greets its first visitor with a newsletter dialog ("Join the Dagster community"):
    # Skip it when it shows on the first page, and whenever it shows later.
    community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    page.add_locator_handler(community, lambda dialog: dialog.get_by_role("button", name="Skip").click())
    page.goto("/")
    try:
        community.get_by_role("button", name="Skip").click(timeout=15_000)
    except PlaywrightTimeoutError:
        pass
    return page


def nav_link(page: Page, label: str):
    """A link of the left navigation by its label (Overview, Runs, Catalog, Jobs, Automation, Lineage, Deployment)."""
    return page.get_by_role("navigation").get_by_role("link").filter(has_text=re.compile(rf"^{label}$"))


def show_asset_graph(page: Page) -> None:
    """Lineage, the group list folded away and every group expanded, so the nine stages show (epoch_tasks → … → block)
    with the training group beside them (corpus_shards → model_versions)."""
    nav_link(page, "Lineage").click()
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    page.get_by_role("combobox", name="Jump to…").wait_for()
    page.get_by_role("button", name="panel_show_right", exact=True).click()  # fold the group list beside the graph
    page.get_by_role("button", name="settings", exact=True).last.click()     # the graph's settings (bottom right)
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    for asset in ("epoch_tasks", "sprint_batches", "sprint_verdicts", "epoch_weights", "task_results", "task_verdicts",
                  "rewards", "block_proposal", "block", "model_versions", "corpus_shards"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()


def launch_next_epoch(page: Page, server: DagsterDevServer) -> tuple[str, int]:
    """From the landing page, Jobs → next_epoch → Materialize: three clicks, counted, and no partition to pick; the
    launcher sensor then starts the `epoch` run of the head's successor. Returns that run's id and the clicks."""
    page.goto("/")
    clicks = 0
    nav_link(page, "Jobs").click()
    clicks += 1
    page.get_by_role("link").filter(has_text=re.compile(r"^next_epoch$")).click()
    clicks += 1
    expect(page.get_by_role("heading", name="next_epoch", exact=True)).to_be_visible()
    materialize = page.get_by_role("button", name=re.compile(r"\bMaterialize( all)?$"))
    expect(materialize).to_be_enabled()
    shot(page, "launch-epoch.png")
    materialize.click()
    clicks += 1
    expect(page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))).to_be_visible()
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not (runs := instance.get_runs(dg.RunsFilter(job_name="epoch"), limit=1)):
            assert time.monotonic() < deadline, f"no epoch run {LAUNCH_TIMEOUT_S}s after the request\n{server.log_tail()}"
            time.sleep(0.5)
    return runs[0].run_id, clicks


def wait_for_run(page: Page, server: DagsterDevServer, run_id: str) -> DagsterRunStatus:
    """Watch the run page until its status reads Success, Failure or Canceled; confirm it over GraphQL."""
    status_tag = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    try:
        status_tag.wait_for(timeout=RUN_TIMEOUT_MS)
    except PlaywrightTimeoutError as error:
        status = DagsterGraphQLClient("127.0.0.1", port_number=server.port).get_run_status(run_id)
        shot(page, "epoch-run-timeout.png")
        raise AssertionError(f"run {run_id} page showed no final status in {RUN_TIMEOUT_MS // 1000}s; "
                             f"GraphQL says {status}\n{server.log_tail()}") from error
    return DagsterGraphQLClient("127.0.0.1", port_number=server.port).get_run_status(run_id)


def open_asset_partition(page: Page, asset: str, epoch: str) -> None:
    """Catalog → `asset` → Partitions → `epoch`: the latest materialization of that partition with its metadata."""
    nav_link(page, "Catalog").click()
    # the asset's own link (a group of the same name links elsewhere)
    page.get_by_role("link", name=re.compile(asset)).and_(page.locator(f'a[href="/assets/{asset}"]')).click()
    page.get_by_role("tab", name="Partitions").click()
    page.get_by_placeholder("Filter by name…").fill(epoch)
    page.get_by_text(epoch, exact=True).first.click()
    page.wait_for_url(re.compile(rf"partition={epoch}\b"))
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()


def read_payouts(page: Page) -> dict[str, dict[str, str]]:
    """The `payouts` table of the open materialization, in its order (heaviest host first): host → column → cell text."""
    table = page.get_by_role("row", name=re.compile(r"^payouts\b")).get_by_role("table")
    expect(table.get_by_role("columnheader").first).to_be_visible()
    assert table.get_by_role("columnheader").all_inner_texts() == PAYOUT_COLUMNS
    payouts = {}
    for row in table.get_by_role("row").all()[1:]:
        cells = [cell.strip() for cell in row.get_by_role("cell").all_inner_texts()]
        payouts[cells[0]] = dict(zip(PAYOUT_COLUMNS, cells))
    return payouts


def test_screenshots_go_to_the_git_ignored_artifacts_folder_of_the_repository():
    """tests/e2e/ is two levels below the root: the screenshots land in <repo>/artifacts/, as before the move."""
    assert (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "gonka_pipelines" / "definitions.py").is_file()
    assert ARTIFACTS == REPO_ROOT / "artifacts"
    assert "/artifacts/" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def test_launch_epoch_from_the_ui_and_read_its_payouts(dagster_ui: DagsterDevServer):
    server, epoch = dagster_ui, "1"
    hosts = sorted(host.name for host in load_network().hosts)
    setup_s = time.perf_counter() - server.started_at
    with sync_playwright() as playwright:
        page = open_browser_page(playwright, server.url)
        try:
            show_asset_graph(page)
            shot(page, "asset-graph.png")

            run_id, clicks = launch_next_epoch(page, server)
            assert clicks == 3
            page.goto(f"/runs/{run_id}")
            launched = time.perf_counter()
            status = wait_for_run(page, server, run_id)
            run_s = time.perf_counter() - launched
            assert status == DagsterRunStatus.SUCCESS, f"run {run_id}: {status}\n{server.log_tail()}"
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_text(f"partition: {epoch}")).to_be_visible()
            shot(page, "epoch-run.png")

            open_asset_partition(page, "rewards", epoch)
            payouts = read_payouts(page)
            assert sorted(payouts) == hosts
            page.get_by_role("row", name=re.compile(r"^payouts\b")).scroll_into_view_if_needed()
            shot(page, "rewards-lineage.png")

            page.get_by_role("row", name=re.compile(r"^derivations\b")).get_by_text("[Show Markdown]").click()
            derivations = page.get_by_role("dialog").filter(has_text="derivations")
            alpha = derivations.get_by_role("heading", name=re.compile(r"^host-alpha — epoch 1: payout "))
            expect(alpha).to_have_text(re.compile(r"^host-alpha — epoch 1: payout [\d,]+$"))
            for host in hosts:
                expect(derivations.get_by_role("heading", name=re.compile(rf"^{host} — epoch 1: payout "))).to_have_count(1)
            alpha.scroll_into_view_if_needed()
            shot(page, "rewards-derivation.png")
            derivations.get_by_role("button", name="Close").click()

            open_asset_partition(page, "model_versions", epoch)
            lineage = page.get_by_role("row", name=re.compile(r"^lineage\b"))
            expect(lineage).to_contain_text("train-")
            served_row = page.get_by_role("row", name=re.compile(r"^served_version\b"))
            shown_version = served_row.inner_text()
            lineage.scroll_into_view_if_needed()
            shot(page, "model-versions.png")
        except Exception:
            shot(page, "browser-failure.png")
            raise
        finally:
            page.context.browser.close()

    server.stop()
    with ChainStore.open(server.data_dir / "chain.duckdb", read_only=True) as store:
        assert store.head().height == 1
        assert store.epoch_status(1) == "finalized"
        (trained,) = [v for v in store.version_rows() if v["epoch"] == 1]
        assert store.served_versions(1) == {"llm-tiny": trained["version"]} and trained["version"][:12] in shown_version
        chain_payouts = {row["name"]: row for row in store.payouts(1)}
    assert list(payouts) == sorted(chain_payouts, key=lambda name: (-chain_payouts[name]["weight"], name)), "heaviest first"
    assert {name: gnk(row["payout"], 10**9) for name, row in chain_payouts.items()} == \
        {name: cells["payout (GNK)"] for name, cells in payouts.items()}
    assert {name: row["status"] for name, row in chain_payouts.items()} == \
        {name: cells["status"] for name, cells in payouts.items()}
    total_s = time.perf_counter() - server.started_at
    print(f"\nbrowser e2e: setup (init, submit, dg dev up) {setup_s:.1f}s, epoch run {run_s:.1f}s, "
          f"total {total_s:.1f}s; screenshots in {ARTIFACTS}")
