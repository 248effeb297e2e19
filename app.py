"""MORM Explorer: the Streamlit app shell. Pages live in pages/; the work in morm_explorer/."""

from pathlib import Path

import streamlit as st

from morm_explorer.ui.warm import warm_imports

warm_imports(Path(__file__).parent / "pages")  # once per server, before any page (see there)

from pages.common import ensure_demo_workspace  # noqa: E402

LOGO = str(Path(__file__).parent / "assets" / "logo.svg")
st.set_page_config(page_title="MORM Explorer", page_icon=LOGO, layout="wide")
st.logo(LOGO)
ensure_demo_workspace()
if st.query_params.get("session"):
    # A session link opens the rating view alone: no navigation, so a rater reaches neither
    # results, exports nor any other page. It answers at / and at /evaluate, where the links
    # the Evaluate page hands out point.
    rate = "pages/rate.py"
    st.navigation([st.Page(rate, title="Rate", icon=":material/how_to_vote:", default=True),
                   st.Page(rate, title="Rate", url_path="evaluate")],
                  position="hidden").run()
    st.stop()

# Presentation mode lives in a plain session key (a widget's own key is dropped on a run that
# stops early), set by ?present=1 or by the toggle.
if st.query_params.get("present") in ("1", "true") and "present" not in st.session_state:
    st.session_state["present"] = True


def _set_present() -> None:
    st.session_state["present"] = st.session_state["present_toggle"]


st.sidebar.toggle("Presentation mode", value=bool(st.session_state.get("present")),
                  key="present_toggle", on_change=_set_present,
                  help="Hide job controls and forms: for demos to stakeholders.")

present = bool(st.session_state.get("present"))
pages = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=not present),
    st.Page("pages/tour.py", title="Walk-through", icon=":material/slideshow:", default=present),
    st.Page("pages/data.py", title="Data", icon=":material/table_view:"),
    st.Page("pages/reward_models.py", title="Reward models", icon=":material/model_training:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/rocket_launch:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/how_to_vote:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
]
st.navigation(pages).run()
