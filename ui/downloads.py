"""Download buttons whose files are built only when clicked, never on a slider move."""
from __future__ import annotations

from typing import Callable


def button(where, label: str, build: Callable[[], bytes], file_name: str, mime: str, key: str):
    """A download button in `where` (st, a column, a container) that calls `build()` only when clicked.

    Streamlit runs a callable `data` in a server thread on click, so a rerun never builds a PNG or CSV nobody asked
    for. on_click="ignore": a click must not rerun the page, because the rerun would replace this button's deferred
    file while the browser is still fetching it (the server then answers "Deferred file … not found")."""
    return where.download_button(label, build, file_name, mime, key=key, on_click="ignore")
