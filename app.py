"""MORM Explorer: the Streamlit app shell. Pages live in pages/; the work in morm_explorer/."""

import streamlit as st

from pages.common import ensure_demo_workspace

st.set_page_config(page_title="MORM Explorer", page_icon="assets/logo.svg", layout="wide")
st.logo("assets/logo.svg")
ensure_demo_workspace()

pages = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table_view:"),
]
st.navigation(pages).run()
