"""Sparsified SmoothGrad (Levine, Singla & Feizi 2019). Coming with issue #5; this page says so plainly."""
import streamlit as st

from ui.workbench import render_sidebar

render_sidebar()

st.title("Sparsified SmoothGrad")
st.warning("Coming: this view is not built yet (tracked in issue #5). Nothing on this page is computed.")
st.markdown("**What it will show:** σ, n, K and ε sliders; plain vs sparsified SmoothGrad, the top-K pixels coloured certified / not certified, and the certified top-K overlap against ε with the empirical overlap under attack.")
