"""certexplorer: `streamlit run app.py`. Navigation over pages/ and the shared workbench sidebar."""
import streamlit as st

from ui.workbench import render_sidebar

st.set_page_config(page_title="certexplorer", page_icon="assets/logo.png", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/certified_pixels.py", title="Certified pixels", icon=":material/grid_on:"),
    st.Page("pages/uniform_smoothing.py", title="Uniform smoothing", icon=":material/blur_on:"),
    st.Page("pages/sparsified_smoothgrad.py", title="Sparsified SmoothGrad", icon=":material/filter_center_focus:"),
    st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]

page = st.navigation(PAGES)
render_sidebar()
page.run()
