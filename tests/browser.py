"""Real-browser test helpers: a workspace with known data, the app served by `streamlit run` on a
free localhost port, and Debian's Chromium driven by Playwright.

Loaded by tests/test_browser.py as a pytest plugin (``pytest_plugins``), so its fixtures and its
failure-screenshot hook apply there only. No browser is ever downloaded: the tests use
/usr/bin/chromium (``apt-get install chromium``, done by ``scripts/setup.sh --dev``) and skip
with a reason when it or the playwright package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
# The flags the issue asks for: no GPU, no sandbox (root in CI), and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}
SHOTS = REPO / "docs" / "screenshots"
RM = "demo-rm"
OBJECTIVES = ["helpful", "harmless"]
POLICIES = ("tiny", "tiny-tuned")
COMPARISON = "tiny-vs-tuned"
SESSION = "browser-votes"
START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 60_000  # one script run of a page (the first one imports torch)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (scripts/setup.sh --dev installs it)"
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: run scripts/setup.sh --dev as root, or "
                "apt-get install chromium")
    return None


# -- the workspace ---------------------------------------------------------------------------
def build_workspace(root: Path, tiny_rm: Path) -> None:
    """The demo data plus: reward model `demo-rm` (helpful, harmless) with planted scores for
    the demo candidates (their true per-behaviour values), two tiny policies, a finished
    comparison of them, and a rating session on its candidates. No network, no big model."""
    from morm_explorer.data.candidates import load_candidate_set
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
    from morm_explorer.demo import ensure_demo
    from morm_explorer.evaluation.compare import CompareJob, candidate_set_name
    from morm_explorer.evaluation.sessions import create_session
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.scoring import store_scores
    from morm_explorer.workspace import Workspace
    from tests.test_compare import _perturbed_copy
    from tests.test_policy import _save_tiny

    ws = Workspace(root)
    ensure_demo(ws)
    shutil.copytree(tiny_rm, root / "reward_models" / RM)
    cset = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    true = [json.loads(m) if isinstance(m, str) else m for m in cset.frame["meta"]]
    values = np.array([[m["true"][o] for o in OBJECTIVES] for m in true])  # (N, K)
    store_scores(ws, RM, cset, values, OBJECTIVES)

    base = _save_tiny(root / "policies" / POLICIES[0])
    _perturbed_copy(base, root / "policies" / POLICIES[1], base)
    info = run_inline(ws, CompareJob(name=COMPARISON, policies=list(POLICIES), reward_model=RM,
                                     limit=3, sampling={"n": 2, "max_new_tokens": 4},
                                     device="cpu"))
    assert info.status == "succeeded", info.error
    create_session(ws, SESSION, candidate_set_name(COMPARISON), objectives=OBJECTIVES, seed=0)


# -- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    """`streamlit run app.py` on a workspace, in its own process group."""

    workspace: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        env = {**os.environ, "MORM_WORKSPACE": str(self.workspace), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(self.port), "--server.address", "127.0.0.1"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"streamlit not healthy after {START_TIMEOUT_S} s:\n"
                           + self.log_tail())

    def stop(self) -> None:
        """Stop the server, then the job workers it started (detached, in their own groups)."""
        if self.proc is not None and self.proc.poll() is None:
            _stop_group(self.proc.pid, lambda: self.proc.poll() is not None)
        from morm_explorer.jobs.store import JobStore
        from morm_explorer.workspace import Workspace

        for w in JobStore(Workspace(self.workspace)).live_workers():
            _stop_group(w.pid, lambda pid=w.pid: not _alive(pid))

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(pid: int, gone, grace_s: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.1)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser_ws(tiny_rm, tmp_path_factory) -> Path:
    if reason := skip_reason():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("browser") / "ws"
    build_workspace(root, tiny_rm)
    return root


@pytest.fixture(scope="session")
def app_server(browser_ws) -> Iterator[AppServer]:
    server = AppServer(browser_ws, browser_ws.parent / "streamlit.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    if reason := skip_reason():
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_server, request, tmp_path_factory):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(RUN_TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:  # keep what the browser showed
        out = tmp_path_factory.getbasetemp() / "browser-failures" / f"{request.node.name}.png"
        out.parent.mkdir(exist_ok=True)
        pg.screenshot(path=str(out))
        print(f"\nscreenshot at failure: {out}\nserver log:\n{app_server.log_tail(30)}")
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


# -- driving a page --------------------------------------------------------------------------
def wait_idle(page, settle_ms: int = 300) -> None:
    """Wait until the app is connected and no script run is in progress (the attributes
    Streamlit's own end-to-end tests wait on), then let the page settle."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]',
                           state="attached")
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           state="attached")
    page.wait_for_timeout(settle_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           state="attached")


def open_app(page, server: AppServer, path: str = "") -> None:
    page.goto(f"{server.url}/{path}")
    wait_idle(page)


def assert_no_exception(page) -> None:
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()
    assert "Traceback" not in page.locator('[data-testid="stMain"]').inner_text()


def screenshot(page, name: str) -> Path:
    """A viewport screenshot into docs/screenshots/<name>.png (the README's images)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
