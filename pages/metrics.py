"""Metrics (Anani et al. 2025, §6 of DESIGN.md). Coming with issue #6; this page says so plainly."""
import streamlit as st

from ui.workbench import render_sidebar

render_sidebar()

st.title("Metrics")
st.warning("Coming: this view is not built yet (tracked in issue #6). Nothing on this page is computed.")
st.markdown("**What it will show:** certified robustness, certified localization on 2×2 grids and faithfulness for several methods, computed in batches, stored, and shown as comparable charts.")
