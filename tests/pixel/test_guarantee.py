"""certlib.pixel.guarantee: the numbers and sentences of what a pixel certificate promises for one image."""
import math

import numpy as np
import pytest

from certlib.pixel.guarantee import describe
from certlib.pixel.prediction_cert import certify_prediction

NAMES = tuple(f"class {i}" for i in range(3))


def _pred(votes: int, n: int = 256):
    return certify_prediction(np.array([0, 32, 0]), np.array([n - votes, votes, 0]), 0.25, 1e-3)


def test_radius_in_model_and_image_pixels_and_rms():
    said = describe(0.2, 1e-3, (1, 32, 32), (1, 8, 8), 4.0, 1, NAMES, _pred(256))
    assert said.radius == 0.2 and said.rms == pytest.approx(0.2 / 32)
    assert said.radius_image == pytest.approx(0.05) and said.rms_image == pytest.approx(0.05 / 8)
    assert "8×8" in said.sentence and "32×32" in said.sentence and "“class 1”" in said.sentence
    same = describe(0.2, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 1, NAMES, None)
    assert same.radius_image is None and "own" not in same.sentence
    assert same.prediction_sentence == "The prediction was not sampled with this run."


def test_the_prediction_sentence_says_whether_the_class_can_change_within_r():
    strong = _pred(256)                       # R_pred = 0.25·Φ⁻¹(1e-3^(1/256)) ≈ 0.48
    assert describe(0.2, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 1, NAMES, strong).prediction_covers
    assert "cannot change within R" in describe(0.2, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 1, NAMES,
                                                strong).prediction_sentence
    other = describe(0.2, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 2, NAMES, strong)
    assert not other.prediction_covers and "not the explained class" in other.prediction_sentence
    beyond = describe(0.9, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 1, NAMES, strong)
    assert not beyond.prediction_covers and "may change within R" in beyond.prediction_sentence
    weak = describe(0.2, 1e-3, (1, 32, 32), (1, 32, 32), 1.0, 1, NAMES, _pred(130))
    assert not weak.prediction_covers and "prediction not certified" in weak.prediction_sentence
    assert math.isclose(strong.radius, 0.4832316547, rel_tol=1e-8)          # 0.25·Φ⁻¹(1e-3^(1/256))


def test_the_verdict_is_amber_with_the_reason_for_a_variant_that_is_not_noisy_input_only():
    from certlib.errors import CertlibError
    from certlib.pixel.guarantee import NOISY_INPUT_ONLY, verdict
    from certlib.smoothing.topk import NORMALISATIONS, PAPER_WARNING

    classes = np.ones((2, 4, 4), dtype=np.int8)
    for norm in NOISY_INPUT_ONLY:
        said = verdict(classes, (5.0, 25.0), 0.17, 0.01, normalisation=norm)
        assert not said.amber and said.caveat is None and "certified for every change" in said.text
    others = set(NORMALISATIONS) - set(NOISY_INPUT_ONLY)
    assert others == {"paper"}                       # a new variant must be classified here on purpose
    said = verdict(classes, (5.0, 25.0), 0.17, 0.01, normalisation="paper")
    assert said.amber and not said.vacuous and PAPER_WARNING in said.caveat
    assert said.text.startswith("Not the noisy-input-only certificate") and "16 in the top 25%" in said.text
    assert "certified for every change" not in said.text
    vacuous = verdict(classes, (5.0, 25.0), 0.0, 0.0, normalisation="paper")
    assert vacuous.amber and vacuous.vacuous
    with pytest.raises(CertlibError, match="normalisation must be one of"):
        verdict(classes, (5.0, 25.0), 0.17, 0.01, normalisation="bogus")
