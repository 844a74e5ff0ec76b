"""Shareable state: the workbench and each page's controls live in the URL's query parameters.

Every page publishes its controls (`publish`) after drawing them, so the address bar always holds the current view;
a reload or a pasted link starts a new session, whose first run reads the parameters back (`restore`, called by
`ui.workbench.remember` before any widget exists). Values are parsed by the type of the control's default and
checked against its allowed values; anything else is ignored and the page says which parameter it ignored and why.
Uploads (images and models) are not in links: the page asks for the file again.
"""
from __future__ import annotations

from typing import Any, Iterable

import streamlit as st

# The sidebar's keys and how to read them (their widgets check the values against what is available).
SIDEBAR = {"device": str, "model_key": str, "image_source": str, "image_digit": str, "image_grid": str,
           "image_photo": str, "image_photogrid": str, "target": int, "method": str}
_RESTORED = "_share_restored"
_NOTICES = "_share_notices"
_SNAPSHOT = "_share_snapshot"


def restore(defaults: dict[str, Any], choices: dict[str, Any] | None = None, keys: Iterable[str] = ()) -> None:
    """Seed session state from the URL for keys this session has not seen yet. `defaults` give the types of page
    controls; `choices` their allowed values (a list) or (low, high) range; `keys` are sidebar keys (SIDEBAR)."""
    seen: set = st.session_state.setdefault(_RESTORED, set())
    # The link as the session's first run saw it: moving to another page clears the URL's parameters before that
    # page's controls are restored.
    if _SNAPSHOT not in st.session_state:
        st.session_state[_SNAPSHOT] = {k: st.query_params.get_all(k) for k in st.query_params}
    params = st.session_state[_SNAPSHOT]
    choices = choices or {}
    for key in [*keys, *defaults]:
        if key in seen:
            continue
        seen.add(key)
        if key not in params or key in st.session_state:
            continue
        raw = params[key]
        try:
            template = defaults[key] if key in defaults else SIDEBAR[key]()
            if template == [] and choices.get(key):        # an empty default list: its type from the choices
                template = [list(choices[key])[0]]
            value = _parse(raw, template)
            _check(value, choices.get(key))
        except (ValueError, TypeError) as exc:
            _notice(f"ignored {key}={','.join(raw)} from the link: {exc}")
            continue
        if key == "image_source" and value == "upload":
            _notice("uploads are not part of a link: upload the image again")
        if key == "model_key" and str(value).startswith("user:"):
            _notice("uploaded models are not part of a link: upload the model again")
            continue
        st.session_state[key] = value
        if key == "target":
            st.session_state["_share_target"] = True


def publish(prefix: str) -> None:
    """Write the sidebar's and this page's (keys starting with `prefix`) current values into the URL."""
    state = st.session_state
    wanted = {k: state[k] for k in SIDEBAR if k in state and state[k] is not None}
    wanted.update({k: state[k] for k in state.get("_remembered", ()) if k.startswith(prefix) and k in state})
    encoded = {k: _encode(v) for k, v in wanted.items()}
    if any(st.query_params.get_all(k) != v for k, v in encoded.items()) or set(st.query_params) - set(encoded):
        st.query_params.from_dict(encoded)


def show_notices() -> None:
    """What the session's link could not set, in the sidebar (open on the first run, then folded away)."""
    notes = st.session_state.get(_NOTICES, [])
    shown = st.session_state.get("_share_notices_shown", 0)
    fresh = len(notes) > shown
    for text in notes[shown:]:
        st.sidebar.warning(f"Link: {text}.", icon=":material/link_off:")
    if notes and not fresh:
        with st.sidebar.expander(f"Shared link: {len(notes)} parameter(s) not applied"):
            for text in notes:
                st.warning(f"Link: {text}.")
    st.session_state["_share_notices_shown"] = len(notes)


def _notice(text: str) -> None:
    st.session_state.setdefault(_NOTICES, []).append(text)


def _encode(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [_encode_one(v) for v in value] or [""]
    return [_encode_one(value)]


def _encode_one(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parse(raw: list[str], default: Any) -> Any:
    if isinstance(default, list):
        kind = type(default[0]) if default else str
        return [_parse_one(v, kind) for v in raw if v != ""]
    if len(raw) != 1:
        raise ValueError("expected one value")
    return _parse_one(raw[0], type(default))


def _parse_one(text: str, kind: type) -> Any:
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(f"{text!r} is not True or False")
        return text == "True"
    if kind is int:
        return int(text)
    if kind is float:
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return value
    return text


def _check(value: Any, allowed: Any) -> None:
    if allowed is None:
        return
    values = value if isinstance(value, list) else [value]
    if isinstance(allowed, tuple):
        low, high = allowed
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise ValueError(f"outside [{low:g}, {high:g}]")
    else:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{bad[0]!r} is not one of the offered values")
