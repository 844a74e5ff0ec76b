"""One visual language for every page, figure and download: colour-blind-safe colours (Okabe & Ito 2008) with fixed
meanings. Blue always means "certified in the top K" (darker for a smaller K), orange "abstain" (no certificate
here, never hidden), vermillion "in the top K but not certified", light grey "certified not in the top K" (left
transparent on overlays). Sky blue and vermillion mark random and attacked points in the bound plots."""
from __future__ import annotations

CERTIFIED_IN = (0, 114, 178)          # Okabe–Ito blue
CERTIFIED_IN_SHADES = ((0, 73, 114), (0, 114, 178), (86, 180, 233), (150, 210, 240), (190, 228, 247))
CERTIFIED_OUT = (187, 187, 187)       # light grey
ABSTAIN = (230, 159, 0)               # Okabe–Ito orange
NOT_CERTIFIED = (213, 94, 0)          # Okabe–Ito vermillion
RANDOM_POINT = "#56B4E9"              # sky blue
ATTACK_POINT = "#D55E00"              # vermillion
HIGHLIGHT = "#0072B2"
NEUTRAL = "#999999"

MEANINGS = {"certified in the top K": CERTIFIED_IN, "certified not in the top K": CERTIFIED_OUT,
            "abstain": ABSTAIN, "in the top K, not certified": NOT_CERTIFIED}


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def level_colour(rank: int) -> tuple[int, int, int]:
    """The shade of blue for the rank-th smallest K level (darker = more selective)."""
    return CERTIFIED_IN_SHADES[min(rank, len(CERTIFIED_IN_SHADES) - 1)]
