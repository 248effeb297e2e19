"""What a rater sees of a session: their name, one item at a time with A and B, the vote form,
their own progress, and a link to resume. Shared by the rater-only view (pages/rate.py) and the
Rate tab of the Evaluate page. (A module of the pages, not a page: app.py lists the pages.)

Every name and text here comes from a rater, a candidate file or a model: prompts and
responses are shown with st.text, everything inside a markdown element goes through `plain`."""

import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.evaluation.sessions import (
    SessionInfo,
    join,
    next_item,
    reveal,
    session_link,
    vote,
)
from morm_explorer.ui.text import plain
from morm_explorer.workspace import Workspace

ANSWER_LABELS = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad"}


def rater_panel(ws: Workspace, info: SessionInfo) -> None:
    """The name field, then (once the rater joined) the next item and the vote form."""
    saved = st.session_state.pop("eval_saved", None)
    if saved:
        item_id, names = saved
        st.info(f"Saved. Pair {item_id}: A was {plain(names['a'])}, B was {plain(names['b'])}."
                if names else f"Saved your vote on pair {item_id}.")
    rater = st.text_input("Your name", key="eval_rater",
                          help="Letters, digits, '.', '_', '@', '-'. Use the same name to "
                               "resume later.")
    if not rater:
        return
    try:
        rater = join(ws, info.name, rater)
    except MormError as e:
        st.error(plain(e))
        return
    rating_form(ws, info, rater)
    base = getattr(st.context, "url", None) or "http://localhost:8501/evaluate"
    st.caption("Link to resume:")
    st.code(session_link(base.split("?")[0], info.name, rater), language=None)


def rating_form(ws: Workspace, info: SessionInfo, rater: str) -> None:
    """The rater's next item and the vote form; the rater has joined the session."""
    item = next_item(ws, info.name, rater)
    if item is None:
        st.success("You have rated every pair of this session. Thank you!")
        return
    st.progress((item.position - 1) / max(item.total, 1),
                text=f"Pair {item.position} of {item.total}")
    st.caption(f"Prompt ({plain(item.category or 'no category')})")
    with st.container(border=True):
        st.text(item.prompt)
    a, b = st.columns(2)
    for col, label, text in ((a, "A", item.response_a), (b, "B", item.response_b)):
        with col:
            st.markdown(f"**Response {label}**")
            with st.container(border=True):
                st.text(text)
    with st.form(f"eval_vote_{item.item_id}"):
        answers = {o: st.radio(plain(o), list(ANSWER_LABELS), format_func=ANSWER_LABELS.get,
                               horizontal=True, index=None, key=f"eval_{item.item_id}_{o}")
                   for o in info.spec.objectives}
        overall = st.radio("Overall (optional)", ["a", "b", "tie"], horizontal=True,
                           index=None, format_func=ANSWER_LABELS.get,
                           key=f"eval_{item.item_id}_overall")
        comment = st.text_area("Comment (optional)", key=f"eval_{item.item_id}_comment")
        if st.form_submit_button("Submit vote", type="primary"):
            missing = [o for o, v in answers.items() if v is None]
            if missing:
                st.error(f"Answer every objective first: {plain(', '.join(missing))}.")
                return
            try:
                vote(ws, info.name, item.item_id, rater, answers, overall=overall,
                     comment=comment)
                names = (reveal(ws, info.name, item.item_id, rater)
                         if info.spec.reveal_after_vote else None)
            except MormError as e:
                st.error(plain(e))
                return
            st.session_state["eval_saved"] = (item.item_id, names)
            st.rerun()
