"""Figures: the top-k probability chart."""
import pytest
import numpy as np

from certlib import palette

from certlib.viz import probability_bar, top_k_classes


def test_top_k_classes_sorted_and_stable_on_ties():
    probs = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    assert top_k_classes(probs, 3) == [(1, 0.3), (2, 0.3), (3, 0.2)]


def test_probability_bar_highlights_the_target():
    probs = np.array([0.05, 0.7, 0.25])
    fig = probability_bar(probs, ("a", "b", "c"), k=2, highlight=2)
    bar = fig.data[0]
    assert list(bar.y) == ["1: b", "2: c"]
    assert list(bar.marker.color) == [palette.NEUTRAL, palette.HIGHLIGHT]


def test_certified_levels_by_hand():
    from certlib.pixel.viz import certified_levels

    # K ladder given out of order (50, 5, 25); four pixels: top at 5% (and so 25, 50), top only at 50%,
    # abstaining somewhere and top nowhere, certified "not top" everywhere
    ks = (50.0, 5.0, 25.0)
    classes = np.array([[1, 1, -1, 0],      # K = 50
                        [1, 0, 0, 0],       # K = 5
                        [1, 0, 0, 0]],      # K = 25
                       dtype=np.int8).reshape(3, 1, 4)
    assert certified_levels(classes, ks).tolist() == [[1, 0, -1, -2]]   # index into ks of the smallest certified K


def test_certified_overlay_colours_by_smallest_level_and_never_hides_abstain():
    from certlib.pixel.viz import ABSTAIN_RGB, LEVEL_RGB, certified_overlay

    base = np.full((1, 4, 3), 100, dtype=np.uint8)
    classes = np.array([[1, 1, -1, 0], [1, 0, 0, 0]], dtype=np.int8).reshape(2, 1, 4)
    out = certified_overlay(base, classes, (50.0, 5.0), alpha=1.0)
    assert tuple(out[0, 0]) == LEVEL_RGB[0]            # smallest K (5%) gets the first colour
    assert tuple(out[0, 1]) == LEVEL_RGB[1]            # top only at 50%: the second colour
    assert tuple(out[0, 2]) == ABSTAIN_RGB             # abstaining is shown
    assert tuple(out[0, 3]) == (100, 100, 100)         # certified not top: transparent
    half = certified_overlay(base, classes, (50.0, 5.0), alpha=0.5)
    assert tuple(half[0, 2]) == tuple(int(v) for v in np.floor((100 + np.array(ABSTAIN_RGB)) / 2 + 0.5))


def test_one_palette_with_fixed_meanings_on_every_certificate_figure():
    """Certified-in is blue, abstain orange, not-certified vermillion, certified-out light grey, on the pixel overlay,
    its bars and the Sparsified SmoothGrad overlay; all four are distinct for the three common colour-vision
    deficiencies (simulated with the Viénot/Brettel matrices), and legends sit inside the figures."""
    from certlib.pixel import viz as pixel_viz
    from certlib.sparse import viz as sparse_viz

    base = np.full((4, 4, 3), 255, np.uint8)
    classes = np.array([[[1, 0, -1, 0]] * 4, [[1, 1, -1, 0]] * 4], dtype=np.int8)
    overlay = pixel_viz.certified_overlay(base, classes, (5.0, 25.0), alpha=1.0)
    assert tuple(overlay[0, 0]) == palette.CERTIFIED_IN_SHADES[0] and tuple(overlay[0, 2]) == palette.ABSTAIN
    assert tuple(overlay[0, 1]) == palette.CERTIFIED_IN_SHADES[1] and tuple(overlay[0, 3]) == (255, 255, 255)
    fig = pixel_viz.overlay_figure(overlay, np.zeros((2, 4, 4)), (5.0, 25.0), pixel_viz.certified_levels(classes, (5.0, 25.0)))
    assert fig.layout.title.text and {t.name for t in fig.data[1:]} >= {"certified top 5%", "abstain"}
    bars = pixel_viz.certificate_bars((5.0, 25.0), {"certified top-K": np.zeros(2), "certified not top-K": np.zeros(2),
                                                     "abstain": np.zeros(2)})
    assert {b.name: b.marker.color for b in bars.data}["certified top-K"] == palette.hex_colour(palette.CERTIFIED_IN)
    assert bars.layout.title.text
    sparse = sparse_viz.topk_certified_overlay(base, np.ones((4, 4), bool), np.eye(4, dtype=bool), alpha=1.0)
    assert tuple(sparse[0, 0]) == palette.CERTIFIED_IN and tuple(sparse[0, 1]) == palette.NOT_CERTIFIED
    # Colour-blind safety: simulated protanopia, deuteranopia and tritanopia keep the four meanings apart.
    sims = {"protan": np.array([[0.152, 1.053, -0.205], [0.115, 0.786, 0.099], [-0.004, -0.048, 1.052]]),
            "deutan": np.array([[0.367, 0.861, -0.228], [0.280, 0.673, 0.047], [-0.012, 0.043, 0.969]]),
            "tritan": np.array([[1.256, -0.077, -0.179], [-0.078, 0.931, 0.148], [0.005, 0.691, 0.304]])}
    colours = np.array([palette.CERTIFIED_IN, palette.ABSTAIN, palette.NOT_CERTIFIED, palette.CERTIFIED_OUT]) / 255
    for name, m in sims.items():
        seen = np.clip(colours ** 2.2 @ m.T, 0, 1) ** (1 / 2.2)
        gaps = [np.abs(seen[i] - seen[j]).max() for i in range(4) for j in range(i + 1, 4)]
        assert min(gaps) > 0.15, (name, gaps)       # the old red/green pair: 0.10 under deuteranopia


def test_attribution_figures_are_one_sided_for_unsigned_maps():
    from certlib.viz import attribution_figure

    unsigned = attribution_figure(np.abs(np.random.default_rng(0).normal(size=(8, 8))), "|gradient|")
    heat = unsigned.data[0]
    assert heat.zmin == 0 and heat.zmax == pytest.approx(float(np.abs(heat.z).max())) and heat.colorscale
    signed = attribution_figure(np.array([[-1.0, 0.5], [0.25, 0.0]]), "signed").data[0]
    assert signed.zmin == -1.0 and signed.zmax == 1.0
    assert unsigned.layout.title.text == "|gradient|" and heat.colorbar.len == 1.0


def test_overlay_figure_with_a_single_level():
    from certlib.pixel import viz as pixel_viz

    classes = np.array([[[1, 0], [-1, 0]]], dtype=np.int8)
    levels = pixel_viz.certified_levels(classes, (25.0,))
    freq = np.array([[[0.25, 1.0], [0.504, 0.0]]])
    fig = pixel_viz.overlay_figure(np.zeros((2, 2, 3), np.uint8), freq, (25.0,), levels)
    assert np.array_equal(np.asarray(fig.data[0].customdata)[..., 0], [[25, 100], [50, 0]])   # whole percentages
    assert "in the top 25% in %{customdata[0]}% of noisy copies" in fig.data[0].hovertemplate
    import plotly.io as pio
    assert '"bdata"' in pio.to_json(fig, validate=False)          # sent as one binary block, not per-pixel text


def test_the_overlay_is_sent_as_a_png_that_decodes_to_its_exact_pixels():
    """The overlay travels as a PNG data URI (the browser decodes it natively instead of painting 50,000 cells);
    lossless: PIL's decoding of the URI gives back every pixel of the overlay, and the hover data stay per pixel."""
    import base64
    import io

    from PIL import Image

    from certlib.pixel import viz as pixel_viz

    rng = np.random.default_rng(3)
    overlay = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    freq = rng.random((2, 37, 53))
    fig = pixel_viz.overlay_figure(overlay, freq, (5.0, 25.0), np.zeros((37, 53), np.int8))
    image = fig.data[0]
    assert image.z is None and image.source.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(image.source.split(",", 1)[1]))).convert("RGB"))
    assert decoded.shape == overlay.shape and np.array_equal(decoded, overlay)
    assert np.asarray(image.customdata).shape == (37, 53, 2)
