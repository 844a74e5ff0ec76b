"""certexplorer: `streamlit run app.py`. Navigation over pages/; each page draws the shared workbench sidebar."""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="certexplorer", page_icon=str(Path(__file__).parent / "assets" / "logo.png"), layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/certified_pixels.py", title="Certified pixels", icon=":material/grid_on:"),
    st.Page("pages/uniform_smoothing.py", title="Uniform smoothing", icon=":material/blur_on:"),
    st.Page("pages/sparsified_smoothgrad.py", title="Sparsified SmoothGrad", icon=":material/filter_center_focus:"),
    st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]

st.navigation(PAGES).run()
