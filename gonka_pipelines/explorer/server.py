"""The explorer's web server: read-only pages over a copy of the chain, on loopback by default.

`serve(layout, port)` copies the chain (waiting for a running stage once, at start), refreshes the copy every second
in the background, and answers each request from the latest copy, so no page waits on the chain's write lock.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from gonka_pipelines.chain.core import LOCK_WAIT_SECONDS
from gonka_pipelines.chain.explorer import HEIGHT
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.explorer import pages
from gonka_pipelines.explorer.snapshot import ChainSnapshot
from gonka_pipelines.local.inbox import waiting_names
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.reports.units import gnk

HERE = Path(__file__).parent
STATIC = HERE / "static"
REFRESH_SECONDS = 1.0
SEARCH_URLS = {"block": "/block/{}", "host": "/host/{}", "account": "/account/{}", "task": "/task/{}"}


@dataclass
class Page:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None


class Explorer:
    """Renders the pages of one chain: routes a path to a page, reading the snapshot's latest copy."""

    def __init__(self, layout: DataLayout, snapshot: ChainSnapshot):
        self.layout, self.snapshot = layout, snapshot
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
        self.templates.filters["gnk"] = _amount

    def respond(self, target: str) -> Page:
        """The page for a request target (path and query), or an error page saying what the chain holds instead."""
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if parts[:1] == ["static"] and len(parts) == 2:
            return self._static(parts[1])
        if parts == ["healthz"]:  # the copy's state only: no database to open
            freshness = self.snapshot.freshness
            body = {"height": freshness.height, "copied_at": freshness.copied_at, "writer_busy": freshness.writer_busy_since is not None}
            return Page(HTTPStatus.OK, json.dumps(body).encode(), "application/json")
        try:
            with self.snapshot.store() as store:
                return self._route(store, parts, query)
        except pages.NotFound as error:
            return self._error(HTTPStatus.NOT_FOUND, "Not found", str(error))
        except ChainError as error:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, "The chain cannot be read", str(error))

    def _route(self, store: ChainStore, parts: list[str], query: dict[str, str]) -> Page:
        match parts:
            case []:
                return self._html(store, "overview.html", pages.overview(store), backlog=len(waiting_names(self.layout.inbox)))
            case ["block", height] if HEIGHT.fullmatch(height):
                return self._html(store, "block.html", pages.block_page(store, int(height)))
            case ["host", host]:
                epoch = query.get("epoch")
                if epoch is not None and not HEIGHT.fullmatch(epoch):
                    raise pages.NotFound(f"epoch must be a block height, got {epoch!r}")
                return self._html(store, "host.html", pages.host_page(store, host, int(epoch) if epoch else None))
            case ["account", key]:
                return self._html(store, "account.html", pages.account_page(store, key))
            case ["task", prefix]:
                return self._html(store, "task.html", pages.task_page(store, prefix.lower()))
            case ["search"]:
                return self._search(store, query.get("q", "").strip())
        raise pages.NotFound(f"no page at /{'/'.join(parts)}")

    def _search(self, store: ChainStore, text: str) -> Page:
        if not text:
            return Page(HTTPStatus.SEE_OTHER, b"", location="/")
        matches = [{**m, "url": SEARCH_URLS[m["kind"]].format(quote(m["key"], safe=""))} for m in store.search(text)]
        if len(matches) == 1:
            return Page(HTTPStatus.SEE_OTHER, b"", location=matches[0]["url"])
        if not matches:
            raise pages.NotFound(f"nothing matches {text!r}")
        return self._html(store, "search.html", {"matches": matches}, query=text)

    def _html(self, store: ChainStore, template: str, context: dict[str, Any], **extra: Any) -> Page:
        base_units = store.genesis().token.base_units
        page_context = {"chain_id": store.chain_id, "freshness": self.snapshot.freshness, "now": time.time(),
                        "database": self.layout.database, "base_units": base_units, **context, **extra}
        html = self.templates.get_template(template).render(**page_context)
        return Page(HTTPStatus.OK, html.encode())

    def _error(self, status: HTTPStatus, heading: str, message: str) -> Page:
        try:
            with self.snapshot.store() as store:
                page = self._html(store, "error.html", {"heading": heading, "message": message})
            return Page(status, page.body)
        except ChainError:  # no copy to read the chain's name from: plain text
            return Page(status, f"{heading}: {message}\n".encode(), "text/plain; charset=utf-8")

    @staticmethod
    def _static(name: str) -> Page:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return Page(HTTPStatus.NOT_FOUND, b"no such file\n", "text/plain; charset=utf-8")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Page(HTTPStatus.OK, path.read_bytes(), f"{content_type}; charset=utf-8")


@pass_context
def _amount(context: Context, units: int) -> Markup:
    """Jinja filter: an amount in GNK with thousands separators, its base units on hover (the chain's base units come
    from the page's context)."""
    return Markup('<span class="amount" title="{} base units">{}</span>').format(f"{units:,}", gnk(units, context["base_units"]))


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _handler(explorer: Explorer, names: frozenset[str] | None) -> type[BaseHTTPRequestHandler]:
    """Requests go to the explorer; on loopback, only those naming a loopback host (a web page elsewhere that rebinds
    its own name to 127.0.0.1 must not read the chain through the user's browser)."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "gonka-explorer"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            named = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
            try:
                if names is not None and named not in names:
                    page = Page(HTTPStatus.FORBIDDEN, f"the explorer answers requests for {', '.join(sorted(names))} "
                                f"only, not {named!r}\n".encode(), "text/plain; charset=utf-8")
                else:
                    page = explorer.respond(self.path)
            except Exception:  # noqa: BLE001 - one broken page must not stop the server; its traceback goes to the log
                traceback.print_exc()
                page = Page(HTTPStatus.INTERNAL_SERVER_ERROR, b"the explorer failed on this page; see its log\n",
                            "text/plain; charset=utf-8")
            try:
                self.send_response(page.status)
                self.send_header("Content-Type", page.content_type)
                self.send_header("Content-Length", str(len(page.body)))
                self.send_header("Cache-Control", "no-store")
                if page.location:
                    self.send_header("Location", page.location)
                self.end_headers()
                self.wfile.write(page.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass  # quiet: one line per request drowns what matters

    return Handler


def serve(layout: DataLayout, host: str = "127.0.0.1", port: int = 8787,
          on_ready: Callable[[str], None] = print) -> None:
    """Serve the explorer until interrupted (Ctrl-C; `gonka explorer` maps SIGTERM to it too); the snapshot folder is
    removed on the way out. A port in use is an OSError naming it."""
    if not layout.database.exists():
        raise ChainError(f"{layout.database}: no chain here yet; run `gonka init` (or `make demo`) first")
    folder = Path(tempfile.mkdtemp(prefix="gonka-explorer-"))
    try:
        snapshot = ChainSnapshot(layout.database, folder)
        snapshot.refresh(lock_wait=LOCK_WAIT_SECONDS)
        server = ThreadingHTTPServer((host, port), _handler(Explorer(layout, snapshot), LOOPBACK if host in LOOPBACK else None))
        server.daemon_threads = True
        stop = threading.Event()
        refresher = snapshot.keep_fresh(REFRESH_SECONDS, stop)
        on_ready(f"explorer: http://{host}:{server.server_address[1]}/ (read-only view of {layout.database}; Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            server.server_close()
            refresher.join(timeout=60)  # a copy in progress finishes before its folder goes
    finally:
        shutil.rmtree(folder, ignore_errors=True)
