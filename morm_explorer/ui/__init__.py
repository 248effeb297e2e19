"""Pure helpers the pages share: plotly figure builders and table shaping (no Streamlit)."""
