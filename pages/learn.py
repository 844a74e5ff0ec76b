"""Learn (teaching page). Coming with issue #7; this page says so plainly."""
import streamlit as st

from ui.workbench import render_sidebar

render_sidebar()

st.title("Learn")
st.warning("Coming: this view is not built yet (tracked in issue #7). Nothing on this page is computed.")
st.markdown("**What it will show:** instant, model-free visuals of randomized smoothing in 2-D, a toy per-pixel certificate, the ball-overlap geometry and top-K overlap under perturbation.")
