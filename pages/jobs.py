"""Jobs: every job of the workspace, wherever it was launched (a page in any tab, a `morm`
command, the demo build): what runs now with the time it has left, the queue with each job's
place in line, and each job's progress, logs and result; cancel from here."""

import time

import pandas as pd
import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.jobs.overview import format_duration, format_logs, job_rows, result_lines
from morm_explorer.ui.text import plain
from pages.common import job_page, presenting

RECENT = 20  # finished jobs listed

ws, backend = job_page(
    "Jobs",
    "One queue for every job of this workspace: those launched from the pages (in any tab), "
    "from the `morm` commands (`--submit`) and the background demo build. A job you launch "
    "runs before the demo build, and beside it while the build runs.")


def when(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def place_text(row) -> str:
    if row.status == "running":
        return "running"
    if row.status == "queued":
        return f"{row.place}" if row.place is not None else "on Ray"
    return ""


def estimate_text(row) -> str:
    if row.estimate_s is None:
        return ""
    if row.status == "running":
        return f"{format_duration(row.estimate_s)} left"
    return f"about {format_duration(row.estimate_s)} to run"


def workers_line(rows, workers) -> str:
    if not workers:
        queued = sum(r.status == "queued" for r in rows)
        return ("No worker is running" + (f": {queued} queued job(s) start when one does (the "
                                          "app starts one by itself)." if queued else "."))
    return "Workers: " + "; ".join(
        f"pid {w.pid} on {w.device or 'cpu'}, " + (
            f"running {len(w.job_id.split(','))} job(s)" if w.job_id else "idle")
        for w in workers)


def job_detail(row) -> None:
    """One job: its state, progress, cancel, error or result, and its last log lines."""
    try:
        info = backend.get(row.id)
    except MormError as e:
        st.error(plain(e))
        return
    color = {"succeeded": "green", "failed": "red", "cancelled": "gray",
             "running": "blue"}.get(info.status, "orange")
    st.markdown(f"**{plain(row.title)}** :{color}-badge[{info.status}]")
    st.progress(info.progress, text=plain(info.message or info.status))
    place = f" · place in line {row.place}" if row.place is not None else ""
    st.caption(f"job `{info.id}` · launched by {plain(row.launched_by)} · submitted "
               f"{when(info.created_at)}{place}"
               + (f" · {estimate_text(row)}" if row.estimate_s is not None else "")
               + (f" · device {plain(info.device)}" if info.device else "")
               + (" · background work: your jobs go first" if row.background else ""))
    if not info.done and not presenting():
        if info.cancel_requested:
            st.caption("Cancel requested: the worker stops the job within seconds.")
        elif st.button("Cancel", key="jobs_cancel", icon=":material/stop:"):
            backend.cancel(info.id)
            st.rerun()
    if info.status == "failed":
        st.code(info.error or "(no error recorded)", language=None, wrap_lines=True)
    if info.result:
        st.markdown("**Result**")
        st.code("\n".join(result_lines(info.result)), language=None, wrap_lines=True)
    logs = format_logs(backend.store, info.id)
    if logs:
        st.markdown("**Log** (latest last)")
        st.code(logs, language=None, wrap_lines=True)


def jobs_view(polling: bool) -> None:
    """The queue and the chosen job, re-read from the job store on every run."""
    workers = backend.workers() if hasattr(backend, "workers") else []
    device = "cuda" if any((w.device or "").startswith("cuda") for w in workers) else "cpu"
    rows = job_rows(backend.store, recent=RECENT, device=device)
    st.caption(workers_line(rows, workers))
    if not rows:
        st.info("No jobs yet: they appear here when a page, a command or the demo build "
                "launches one.")
        return
    table = pd.DataFrame([{
        "in line": place_text(r), "job": r.title, "status": r.status, "progress": r.progress,
        "estimate": estimate_text(r), "launched by": r.launched_by,
        "submitted": when(r.created_at), "ran for": format_duration(r.elapsed_s),
        "message": r.message or "", "id": r.id} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="jobs_table",
                 column_config={"progress": st.column_config.ProgressColumn(
                     "progress", min_value=0.0, max_value=1.0, format="percent")})
    by_id = {r.id: r for r in rows}
    if st.session_state.get("jobs_pick") not in by_id:
        st.session_state["jobs_pick"] = rows[0].id  # running first, then the queue
    job_id = st.selectbox("Job", list(by_id), key="jobs_pick", format_func=lambda i: (
        f"{by_id[i].title} · {by_id[i].launched_by} · {when(by_id[i].created_at)}"))
    job_detail(by_id[job_id])
    if polling and all(r.status not in ("queued", "running") for r in rows):
        st.rerun(scope="app")  # every job is over: stop polling


active = any(not j.done for j in backend.list(status=("queued", "running"), limit=1))
st.fragment(jobs_view, run_every=2.0 if active else None)(active)
