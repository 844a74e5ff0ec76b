"""The page's frame before the heavy imports: on a cold start (the first run after the server starts) importing
torch, captum and zennit takes seconds, during which Streamlit would show a blank page. Each page first draws its
title and a loading line with nothing but streamlit imported, then imports the rest and removes the line."""
import streamlit as st


def loading(title: str):
    """Draw `title` and a loading line; returns the placeholder to empty once the page's imports are done."""
    st.set_page_config(page_title="certexplorer", layout="wide")
    slot = st.empty()
    with slot.container():
        st.title(title)
        st.caption("Loading the models and libraries … (a few seconds on the first visit after a restart)")
    return slot
