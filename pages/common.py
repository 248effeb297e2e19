"""What every page shares: the workspace (one per server process) and the demo build."""

from __future__ import annotations

import streamlit as st

from morm_explorer.demo import ensure_demo
from morm_explorer.errors import MormError
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
    return ensure_demo(_workspace(root))


def ensure_demo_workspace() -> None:
    """Build the demo data once per server process; show an error instead of crashing."""
    try:
        _demo_built(str(default_root().resolve()))
    except MormError as e:
        st.error(f"Could not build the demo workspace: {e}")


def presenting() -> bool:
    """Presentation mode (the sidebar toggle, or ``?present=1`` in the address): job controls
    are hidden, so a demo shows results, not forms."""
    return bool(st.session_state.get("present", False))
