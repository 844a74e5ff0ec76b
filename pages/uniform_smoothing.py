"""Uniform smoothing (Wang & Kong 2024). Coming with issue #4; this page says so plainly."""
import streamlit as st

from ui.workbench import render_sidebar

render_sidebar()

st.title("Uniform smoothing")
st.warning("Coming: this view is not built yet (tracked in issue #4). Nothing on this page is computed.")
st.markdown("**What it will show:** ball radius r, ε and n sliders; the raw and the uniformly smoothed attribution, the certified lower bound on the cosine similarity against ε, and the cosine measured under random and adversarial perturbations.")
