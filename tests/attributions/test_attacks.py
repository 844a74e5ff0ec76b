"""The attribution attack on the real bundled model: it stays in the ε-ball, keeps the class, is reproducible, and
moves the base attribution clearly further than random directions of the same norm do (an attack that does
nothing would fail this)."""
import numpy as np
import pytest
import torch
from torch import nn

from certlib.attributions import attacks, methods as attributions
from certlib.models import registry as models
from certlib.errors import CertlibError
from certlib.data.images import digit_gallery, prepare_image


@pytest.fixture(scope="module")
def setup():
    model = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[5].pixels, 1, (32, 32), True)
    target = int(model.predict_proba(x).argmax())
    return model, x, target


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten()[None], b.flatten()[None]))


@pytest.mark.parametrize("loss", ["cosine", "topk"])
def test_attack_stays_in_the_ball_keeps_the_class_and_beats_random(setup, loss):
    model, x, target = setup
    eps = 1.0
    result = attacks.attribution_attack(model, "grad", x, target, eps, loss=loss, steps=8, restarts=2, seed=3)
    assert float(result.delta.norm()) <= eps * (1 + 1e-5)
    assert result.label_kept
    with torch.no_grad():
        assert int(model.module(x + result.delta).argmax()) == int(model.module(x).argmax())
    grad = attributions.make_attribution("grad", model)
    clean = grad.attribute(x, target)[0]
    attacked = grad.attribute(x + result.delta, target)[0]
    randoms = grad.attribute(x + attacks.random_directions(x, eps, 4, seed=1), target)
    if loss == "cosine":
        assert result.base_similarity == pytest.approx(_cos(clean, attacked), abs=1e-5)
        assert result.base_similarity < min(_cos(clean, r) for r in randoms) - 0.02
    else:
        from certlib.pixel.cert import top_k_mask
        s, s_att = top_k_mask(clean[None], 10.0)[0], top_k_mask(attacked[None], 10.0)[0]
        assert result.base_similarity == pytest.approx(float((s & s_att).sum() / s.sum()))
        random_overlaps = [float((s & top_k_mask(r[None], 10.0)[0]).sum() / s.sum()) for r in randoms]
        assert result.base_similarity < min(random_overlaps) - 0.05


def test_attack_is_reproducible_and_eps_zero_is_the_identity(setup):
    model, x, target = setup
    a = attacks.attribution_attack(model, "input_x_gradient", x, target, 0.5, steps=3, restarts=2, seed=7)
    b = attacks.attribution_attack(model, "input_x_gradient", x, target, 0.5, steps=3, restarts=2, seed=7)
    assert torch.equal(a.delta, b.delta) and a.base_similarity == b.base_similarity
    zero = attacks.attribution_attack(model, "grad", x, target, 0.0)
    assert float(zero.delta.abs().max()) == 0.0 and zero.base_similarity == 1.0


def test_non_differentiable_methods_are_attacked_by_transfer_and_say_so(setup):
    model, x, target = setup
    result = attacks.attribution_attack(model, "gradcam", x, target, 0.5, steps=2, restarts=1)
    assert result.gradient_source.startswith("transfer")
    assert float(result.delta.norm()) <= 0.5 * (1 + 1e-5)


def test_softplus_twin_replaces_every_relu_and_leaves_the_model_alone(setup):
    model, _, _ = setup
    twin = attacks.softplus_surrogate(model.module)
    assert not any(isinstance(m, nn.ReLU) for m in twin.modules())
    assert any(isinstance(m, nn.ReLU) for m in model.module.modules())
    assert all(not p.requires_grad for p in twin.parameters())


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=-1.0), "eps must be a non-negative number"),
    (dict(eps=0.5, loss="l1"), "loss must be one of"),
    (dict(eps=0.5, steps=0), r"steps must be an integer in \[1, 10,000\]"),
    (dict(eps=0.5, restarts=0), r"restarts must be an integer in \[1, 1,000\]"),
])
def test_bad_arguments_are_named(setup, kwargs, message):
    model, x, target = setup
    with pytest.raises(CertlibError, match=message):
        attacks.attribution_attack(model, "grad", x, target, **kwargs)


def test_random_directions_have_the_exact_norm():
    d = attacks.random_directions(torch.zeros(1, 3, 8, 8), 0.7, 5, seed=2)
    assert d.shape == (5, 3, 8, 8)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.full((5,), 0.7))


def test_guided_direction_has_the_norm_and_says_how(setup):
    model, x, target = setup
    method = attributions.make_attribution("grad", model)
    attribute = lambda xb: method.attribute(xb, target)  # noqa: E731
    logit = lambda xb: model.module(xb)[:, target]  # noqa: E731
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[10:20, 10:20] = True
    d, how = attacks.topk_flip_direction(attribute, logit, x, mask, 0.3)
    assert abs(float(d.norm()) - 0.3) < 1e-5 and how
