"""Certified pixels (Anani et al. 2025). Coming with issue #3; this page says so plainly."""
import streamlit as st

from ui.workbench import render_sidebar

render_sidebar()

st.title("Certified pixels")
st.warning("Coming: this view is not built yet (tracked in issue #3). Nothing on this page is computed.")
st.markdown("**What it will show:** σ, τ, α, n and top-K% sliders; the certified / abstain overlay of the attribution, the certified radius R = σ·Φ⁻¹(τ), the share of certified pixels per K, and downloads of the overlay and per-pixel counts.")
