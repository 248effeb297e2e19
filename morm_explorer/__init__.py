"""MORM Explorer: multi-objective reward models, from preference data to compared policies.

The library does all the work (data, models, jobs, statistics); the Streamlit pages only draw
what it returns. Nothing in this package imports Streamlit.
"""

__version__ = "0.1.0"
