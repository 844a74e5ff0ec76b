"""Streamlit glue shared by app.py and pages/: the workbench sidebar and caches. No math here."""
