"""The method registry: the paper's 12 methods, their families, and which models they apply to."""
import pytest

from certlib import attributions, models
from certlib.errors import CertlibError


def test_the_papers_twelve_methods_in_three_families():
    by_family = {f: [m for m in attributions.METHODS.values() if m.family == f] for f in attributions.FAMILIES}
    assert len(attributions.METHODS) == 12
    assert [len(by_family[f]) for f in attributions.FAMILIES] == [5, 2, 5]


def test_every_method_applies_to_the_bundled_cnn():
    spec = models.get_spec("digits_sigma0.25")
    assert all(attributions.unavailable_reason(k, spec) is None for k in attributions.METHODS)


def test_cam_family_is_unavailable_on_vit_with_the_reason():
    spec = models.get_spec("vit_b_16")
    reasons = {k: attributions.unavailable_reason(k, spec) for k in attributions.METHODS}
    blocked = {k for k, r in reasons.items() if r}
    assert blocked == {"cam", "gradcam", "gradcam_pp", "ablationcam", "layercam"}
    assert "vision transformer" in reasons["gradcam"]


def test_unknown_method_is_named():
    with pytest.raises(CertlibError, match="unknown attribution method 'shap'"):
        attributions.get_method("shap")
