"""Draws assets/logo.png: a 4x4 'pixel certificate' (certified top / certified not-top / abstain)."""
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {1: (214, 39, 40), 0: (230, 230, 230), -1: (255, 191, 0)}
PATTERN = np.array([[0, 1, 1, 0], [1, 1, -1, 0], [0, 1, 1, 0], [0, -1, 0, 0]])


def main() -> None:
    cell, gap = 14, 2
    size = 4 * cell + 5 * gap
    img = np.full((size, size, 4), 0, dtype=np.uint8)
    for (r, c), v in np.ndenumerate(PATTERN):
        y, x = gap + r * (cell + gap), gap + c * (cell + gap)
        img[y:y + cell, x:x + cell] = (*COLOURS[int(v)], 255)
    Image.fromarray(img, "RGBA").save(Path(__file__).with_name("logo.png"))


if __name__ == "__main__":
    main()
