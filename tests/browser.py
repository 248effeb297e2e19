"""Real-browser test helpers: a workspace with known data, the app served by `streamlit run` on a
free localhost port, and Debian's Chromium driven by Playwright.

The fixtures that use these live in tests/test_browser.py. No browser is ever downloaded: the
tests use /usr/bin/chromium (``apt-get install chromium``, done by ``scripts/setup.sh --dev``)
and skip with a reason when it or the playwright package is missing.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
# The flags the issue asks for: no GPU, no sandbox (root in CI), and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}
# The README's images are refreshed only on request (MORM_UPDATE_SCREENSHOTS=1): they show
# temp paths, ports and job ids, so a plain test run writes them to test-artifacts/ instead.
SHOTS = REPO / "docs" / "screenshots" if os.environ.get("MORM_UPDATE_SCREENSHOTS") == "1" \
    else REPO / "test-artifacts" / "screenshots"
FAILURES = REPO / "test-artifacts" / "browser"  # what the browser showed when a test failed
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
    rm = root / "reward_models" / RM
    shutil.copytree(tiny_rm, rm)
    cfg = json.loads((rm / "config.json").read_text())
    # Standardizing with mean 0 and std 1 is the identity: the winners on Explore are then
    # plain argmaxes of w . scores, computable by hand in the tests.
    cfg["stats"].update(mean=[0.0] * len(OBJECTIVES), std=[1.0] * len(OBJECTIVES))
    (rm / "config.json").write_text(json.dumps(cfg))
    cset = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    store_scores(ws, RM, cset, planted_scores(cset.frame), OBJECTIVES)

    base = _save_tiny(root / "policies" / POLICIES[0])
    _perturbed_copy(base, root / "policies" / POLICIES[1], base)
    info = run_inline(ws, CompareJob(name=COMPARISON, policies=list(POLICIES), reward_model=RM,
                                     limit=3, sampling={"n": 2, "max_new_tokens": 4},
                                     device="cpu"))
    assert info.status == "succeeded", info.error
    create_session(ws, SESSION, candidate_set_name(COMPARISON), objectives=OBJECTIVES, seed=0,
                   reveal_after_vote=True)


def planted_scores(frame) -> np.ndarray:
    """(N, K) scores of the demo candidates: their behaviours' true values (in ``meta``), so
    the Explore page shows the real trade-off between helpful and harmless answers."""
    metas = [json.loads(m) if isinstance(m, str) else m for m in frame["meta"]]
    return np.array([[m["true"][o] for o in OBJECTIVES] for m in metas], dtype=np.float32)


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
               "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
               "MORM_DEMO": "data"}  # the demo data only: no background build of models
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


# -- the browser ----------------------------------------------------------------------------
def launch_chromium(playwright):
    """Debian's Chromium, headless, with the issue's flags (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)


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


def assert_no_exception(page, server: AppServer | None = None) -> None:
    """No exception on the page, and none in the server's log so far."""
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()
    assert "Traceback" not in page.locator('[data-testid="stMain"]').inner_text()
    if server is not None:
        assert "Traceback" not in server.log.read_text(errors="replace"), server.log_tail()


def settle(page) -> None:
    """Before a screenshot: idle, lazily loaded parts (tables, charts) fetched, fonts ready."""
    wait_idle(page)
    page.wait_for_load_state("networkidle")
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_timeout(800)


def screenshot(page, name: str, top: bool = False) -> Path:
    """A viewport screenshot into SHOTS/<name>.png (the README's images on request); ``top``
    scrolls the page's title into view first."""
    settle(page)
    if top:
        page.locator('[data-testid="stMain"] h1').first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
