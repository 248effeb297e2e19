"""MORM Explorer: the Streamlit app shell. Pages live in pages/; the work in morm_explorer/."""

from pathlib import Path

import streamlit as st

from pages.common import ensure_demo_workspace

LOGO = str(Path(__file__).parent / "assets" / "logo.svg")
st.set_page_config(page_title="MORM Explorer", page_icon=LOGO, layout="wide")
st.logo(LOGO)
ensure_demo_workspace()
if st.query_params.get("present") in ("1", "true") and "present" not in st.session_state:
    st.session_state["present"] = True
st.sidebar.toggle("Presentation mode", key="present",
                  help="Hide job controls and forms: for demos to stakeholders.")

pages = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table_view:"),
    st.Page("pages/reward_models.py", title="Reward models", icon=":material/model_training:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/rocket_launch:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/how_to_vote:"),
]
st.navigation(pages).run()
