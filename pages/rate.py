"""Rate: what a session link (?session=...&rater=...) opens, and all it opens. The rater sees
one item at a time, the vote form and their own progress; app.py lists no other page for such
a link, so results, exports, policy names and the rest of the app stay with the owner."""

import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.evaluation.sessions import get_session
from morm_explorer.ui.text import plain
from pages.common import workspace
from pages.rating import rater_panel

ws = workspace()
params = st.query_params
if params.get("rater") and "eval_rater" not in st.session_state:
    st.session_state["eval_rater"] = params["rater"]

st.title("Rating")
try:
    info = get_session(ws, params.get("session", ""))
except MormError as e:
    st.error(plain(e))
    st.stop()
st.caption(f"Session {plain(info.name)}: compare two responses to each prompt, A and B, per "
           "objective. Every vote is saved the moment it is cast, so a closed tab loses "
           "nothing.")
if info.status != "open":
    st.info("This session is closed: it takes no more votes. Thank you!")
    st.stop()
rater_panel(ws, info)
