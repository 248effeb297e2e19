"""What every page shares: the workspace (one per server process) and the demo build."""

from __future__ import annotations

import os

import streamlit as st

from morm_explorer.demo import ensure_demo
from morm_explorer.errors import MormError
from morm_explorer.ui.text import plain
from morm_explorer.workspace import Workspace, default_root


def _leave_legacy_pages_mode() -> None:
    """`streamlit run app.py` beside a pages/ folder starts in Streamlit's legacy multipage mode
    until app.py calls st.navigation, so a first visit straight to /data would run that page
    without the app shell. Switch the server to st.navigation mode and rerun through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_pages_mode()


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)


def workspace() -> Workspace:
    """The workspace of this server ($MORM_WORKSPACE or ./workspace)."""
    return _workspace(str(default_root().resolve()))


@st.cache_resource(show_spinner="Building the demo workspace (first start only) ...")
def _demo_built(root: str) -> list[str]:
    ws = _workspace(root)
    built = ensure_demo(ws)
    if os.environ.get("MORM_DEMO", "full") == "full":
        start_demo_job(ws)
    return built


def app_backend(ws: Workspace, launched_by: str):
    """The job backend as the app uses it: jobs record ``launched_by``, and a worker it starts
    belongs to this server process (it stops, putting its jobs back in the queue, when the
    app stops)."""
    from morm_explorer.jobs.backend import get_backend

    return get_backend(ws, launched_by=launched_by, owner_pid=os.getpid())


def keep_queue_moving(backend) -> None:
    """Start a worker when jobs are queued and none is alive: jobs put back in the queue when
    the app last stopped, or queued by a command with no worker."""
    ensure = getattr(backend, "ensure_worker", None)  # the local backend's; Ray runs its own
    local = [j for j in backend.store.queue() if j.worker_id is None]  # not Ray's
    if ensure is not None and local and not backend.workers():
        ensure()


def start_demo_job(ws: Workspace, retry: bool = False) -> str | None:
    """Submit the background build of the full demo (reward models, SmolLM2 samples, two PPO
    policies, a comparison) unless it is complete, queued or running, or (without ``retry``)
    an earlier build failed. ``MORM_DEMO=data`` keeps the demo to the data alone."""
    from morm_explorer.demo_jobs import PrepareDemoJob, demo_complete

    backend = app_backend(ws, "demo build")
    keep_queue_moving(backend)  # jobs the app's last stop put back in the queue go on
    jobs = backend.list(kind=PrepareDemoJob.kind, limit=5)
    if demo_complete(ws) or any(not j.done for j in jobs):
        return None
    if jobs and jobs[0].status in ("failed", "cancelled") and not retry:
        return None
    return backend.submit(PrepareDemoJob())


def ensure_demo_workspace() -> None:
    """Build the demo data once per server process; show an error instead of crashing."""
    try:
        _workspace(str(default_root().resolve()))
    except MormError as e:  # the database itself is unreadable: no page can work
        st.error(f"Cannot open the workspace: {plain(e)}")
        st.stop()
    try:
        _demo_built(str(default_root().resolve()))
    except MormError as e:
        st.error(f"Could not build the demo workspace: {plain(e)}")


def job_page(title: str, caption: str):
    """The start of a page that runs jobs: its title and caption; returns the workspace and its
    job backend."""
    from morm_explorer.demo_jobs import PrepareDemoJob

    ws = workspace()
    st.title(title)
    st.caption(caption)
    backend = app_backend(ws, f"{title} page")
    keep_queue_moving(backend)
    building = [j for j in backend.list(kind=PrepareDemoJob.kind, limit=1) if not j.done]
    if building:  # what this page lists may still grow: say so, and where to follow it
        st.caption(f":material/hourglass_top: The demo is still being prepared in the "
                   f"background ({plain(building[0].message or building[0].status)}); its models, "
                   "policies and comparison appear here as they are ready (progress on "
                   "Overview and Jobs).")
        st.fragment(demo_watch, run_every=3.0)(ws, backend, building[0].id, ready_demo_parts(ws))
    return ws, backend


def ready_demo_parts(ws) -> tuple[str, ...]:
    from morm_explorer.demo_jobs import demo_parts

    return tuple(label for label, ready in demo_parts(ws) if ready)


def demo_watch(ws, backend, job_id: str, ready: tuple[str, ...]) -> None:
    """While the demo build runs: the whole page again when a part of the demo lands or the
    build ends, so what the page lists appears without a click."""
    if backend.get(job_id).done or ready_demo_parts(ws) != ready:
        st.rerun(scope="app")


def follow_page_job(backend, key: str, kinds: set[str] | None = None) -> str | None:
    """The id of the queued or running job this page follows, kept in ``st.session_state[key]``:
    the one this tab launched or, in a tab that launched none, the newest one launched from
    this page anywhere (another tab, a browser restarted), found in the job store."""
    from morm_explorer.jobs.overview import active_jobs

    if not st.session_state.get(key):
        found = active_jobs(backend.store, launched_by=backend.launched_by, kinds=kinds)
        if found:
            st.session_state[key] = found[0].id
    return st.session_state.get(key)


def queue_note(backend, info) -> str | None:
    """For a queued job: its place in line, and where the whole queue is shown."""
    from morm_explorer.jobs.overview import place_in_line

    if info.status != "queued":
        return None
    place = place_in_line(backend.store, info.id)
    where = f"number {place} in line" if place is not None else "waiting for its cluster"
    return (f"Queued: {where}. What you launch runs before the background demo build; the "
            "Jobs page shows the whole queue.")


def presenting() -> bool:
    """Presentation mode (the sidebar toggle, or ``?present=1`` in the address): job controls
    are hidden, so a demo shows results, not forms."""
    return bool(st.session_state.get("present", False))


def show_trust(trust, label: str = "") -> None:
    """How far a reward model's scores on a set can be trusted (a `reward.trust.SetTrust`):
    its warnings, its notes on what could not be checked, and a caption on what was. Every
    line is shown as plain text (names may hold markdown characters)."""
    prefix = f"{label}: " if label else ""
    for w in trust.warnings:
        st.warning(plain(prefix + w), icon=":material/warning:")
    for n in trust.notes:
        st.info(plain(prefix + n), icon=":material/info:")
    if trust.summary:
        st.caption(plain(prefix + trust.summary))
