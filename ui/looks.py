"""Fixed-n looks (issue #26, item 6b): the exact binomial test is valid only for an n chosen before the counts are
seen. Raising n after looking, on the same seed, and keeping the better certificate is sequential testing (the best
of 9 values of n had a family-wise error of 0.212 at α = 0.05). So a new n for a configuration already looked at
draws fresh noise (a new seed, said on the page); the anytime-valid test is the way to look again on the same noise.

Looks are kept per session: {configuration: {seed: {n, …}}}, a configuration being everything the counts depend
on except n and the seed."""
from __future__ import annotations

import streamlit as st

LOOKS = "_cp_looks"
CURRENT = "_cp_look_config"
NOTICE = "_cp_seed_notice"


def _looks() -> dict:
    return st.session_state.setdefault(LOOKS, {})


def record(config: tuple, seed: int, n: int) -> None:
    """A fixed-n certificate of (config, seed, n) has been shown."""
    _looks().setdefault(config, {}).setdefault(int(seed), set()).add(int(n))
    st.session_state[CURRENT] = config


def earlier_ns(config: tuple, seed: int, n: int) -> list[int]:
    """Other n already looked at on this configuration and seed (empty: this n is a valid first look)."""
    return sorted(m for m in _looks().get(config, {}).get(int(seed), set()) if m != int(n))


def seed_for_new_n(config: tuple, seed: int, n: int) -> int:
    """The seed a fixed-n look at n should use: this one if it was never looked at with another n; else a seed
    whose only look is this very n (viewing it again adds no test); else the smallest seed never looked at."""
    by_seed = _looks().get(config, {})
    if not earlier_ns(config, seed, n):
        return int(seed)
    same = [s for s, ns in by_seed.items() if ns == {int(n)}]
    if same:
        return min(same)
    return next(s for s in range(len(by_seed) + 1) if s not in by_seed)


def on_new_n(n_key: str) -> None:
    """Callback of the n slider (and of buttons that set n): switch to fresh noise when needed, and say so."""
    config = st.session_state.get(CURRENT)
    if config is None:
        return
    seed, n = int(st.session_state["cp_seed"]), int(st.session_state[n_key])
    fresh = seed_for_new_n(config, seed, n)
    if fresh != seed:
        st.session_state["cp_seed"] = fresh
        st.session_state[NOTICE] = (
            f"Seed {seed} was already looked at with n = {', '.join(map(str, earlier_ns(config, seed, n)))}: a "
            f"fixed-n test is valid only for an n chosen before seeing the counts, so n = {n:,} draws fresh noise "
            f"with seed {fresh}. To look again on the same noise, use the anytime-valid test.")


def show_notice() -> None:
    said = st.session_state.pop(NOTICE, None)
    if said:
        st.info(said, icon=":material/casino:")
