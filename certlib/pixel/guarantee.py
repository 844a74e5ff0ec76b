"""What a pixel certificate guarantees for this image, in words and numbers a newcomer can picture.

- R lives in the model's input space ([0,1] pixels after preprocessing). When the image was resized for the model,
  R / gain (images.preprocessing_gain) is the radius it covers in the image's own pixels: an 8×8 image upsampled
  to 32×32 stretches every perturbation by 4, so R there is 4× smaller.
- R/√d is the per-pixel RMS change that a perturbation of norm R allows.
- The explanation is of a fixed target class. Whether the *prediction* itself can change within R is a separate
  certificate (certlib.pixel.prediction_cert); both are stated side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from certlib.pixel.prediction_cert import PredictionCertificate


@dataclass(frozen=True)
class Guarantee:
    radius: float                    # R in the model's input space
    rms: float                       # R / √d
    model_shape: tuple[int, int, int]
    radius_image: float | None       # R / gain in the image's own pixels; None when the model sees the image as is
    rms_image: float | None
    image_shape: tuple[int, int, int]
    prediction: PredictionCertificate | None
    prediction_covers: bool          # the prediction is certified to stay the target for every ‖δ‖ ≤ R
    sentence: str
    prediction_sentence: str


def _shape_text(shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    return f"{w}×{h}" + ("" if c == 1 else f"×{c}")


def describe(radius: float, alpha: float, model_shape: tuple[int, int, int], image_shape: tuple[int, int, int],
             gain: float, target: int, class_names: tuple[str, ...],
             prediction: PredictionCertificate | None) -> Guarantee:
    """Numbers and sentences of the guarantee. `gain` is images.preprocessing_gain for this image and model."""
    d = math.prod(model_shape)
    d_img = math.prod(image_shape)
    resized = tuple(image_shape) != tuple(model_shape) or not math.isclose(gain, 1.0)
    r_img = radius / gain if resized else None
    sentence = (f"With probability ≥ 1 − {alpha:g}, every certified pixel keeps its top-K class for every input "
                f"perturbation δ with ‖δ‖₂ ≤ R = {radius:.3f} in the model's {_shape_text(model_shape)} input "
                f"(a per-pixel RMS change of {radius / math.sqrt(d):.4f} on the [0, 1] scale)")
    if r_img is not None:
        sentence += (f", that is ‖δ‖₂ ≤ {r_img:.3f} in the image's own {_shape_text(image_shape)} pixels "
                     f"(RMS {r_img / math.sqrt(d_img):.4f}), since preprocessing stretches perturbations by up to "
                     f"{gain:.3g}×")
    sentence += f". It explains the fixed class “{class_names[target]}”."
    covers = prediction is not None and prediction.covers(target, radius)
    return Guarantee(radius, radius / math.sqrt(d), tuple(model_shape), r_img,
                     None if r_img is None else r_img / math.sqrt(d_img), tuple(image_shape), prediction, covers,
                     sentence, _prediction_sentence(prediction, radius, target, class_names))


def _prediction_sentence(pred: PredictionCertificate | None, radius: float, target: int,
                         class_names: tuple[str, ...]) -> str:
    if pred is None:
        return "The prediction was not sampled with this run."
    head = (f"Smoothed prediction “{class_names[pred.top_class]}” ({pred.votes}/{pred.n} noisy votes, "
            f"p_A ≥ {pred.p_lower:.3f} at α = {pred.alpha:g})")
    if not pred.certified:
        return f"{head}: prediction not certified (p_A ≤ 1/2), so the explained class may change within any radius."
    text = f"{head}: prediction certified up to radius R_pred = {pred.radius:.3f}"
    if pred.top_class != target:
        return text + f", but it is not the explained class “{class_names[target]}”."
    if pred.radius > radius:
        return text + f" > R = {radius:.3f}: the explained class cannot change within R."
    return text + f" ≤ R = {radius:.3f}: beyond R_pred the explained class may change within R."


# The normalisations of h^K (certlib.smoothing.topk.NORMALISATIONS) that are functions of the noisy input alone: only under
# them is the certificate the one the verdict states (every ‖δ‖₂ ≤ R). Any other is said, in amber, with the reason.
NOISY_INPUT_ONLY = ("rank", "own_scale")


@dataclass(frozen=True)
class Verdict:
    """The one line above a pixel certificate: what is certified, in plain words, and whether it is vacuous."""

    text: str
    vacuous: bool                    # R = 0 or n too small: nothing is certified beyond the unperturbed image
    caveat: str | None = None        # why the certificate is not the noisy-input-only guarantee (paper variant)

    @property
    def amber(self) -> bool:
        """Shown as a warning, never as a success: vacuous, or not the guarantee the words state."""
        return self.vacuous or self.caveat is not None


def _caveat(normalisation: str) -> str | None:
    """None for a noisy-input-only h^K, else the reason the guarantee at x + δ does not hold."""
    from certlib.smoothing.topk import NORMALISATION_LABELS, PAPER_WARNING, check_normalisation

    if check_normalisation(normalisation) in NOISY_INPUT_ONLY:
        return None
    reason = PAPER_WARNING if normalisation == "paper" else NORMALISATION_LABELS[normalisation]
    return f"Not the noisy-input-only certificate (h^K “{normalisation}”): {reason}."


def verdict(classes, k_percents, radius: float, rms: float, shortfall: str | None = None,
            normalisation: str = "rank") -> Verdict:
    """`classes` [K,H,W] (1 certified in the top K%, 0 certified out, −1 abstain) for `k_percents` (ascending).

    Counts per level, in the words a stakeholder reads: "312 of 1,024 pixels are certified in the top 25% …; 412
    abstain". R = 0 (τ = 0.5) certifies nothing beyond the unperturbed image, and `shortfall` (n too small for α) means
    every pixel abstains: both turn the verdict into a warning. So does a `normalisation` of h^K that is not a
    function of the noisy input alone ("paper"): the counts are stated after the reason, and `amber` is set."""
    import numpy as np

    classes = np.asarray(classes).reshape(len(k_percents), -1)
    pixels = classes.shape[1]
    caveat = _caveat(normalisation)
    if shortfall:
        return Verdict(f"Nothing can be certified: {shortfall}", True, caveat)
    if radius <= 0:
        return Verdict("R = 0 at τ = 0.50: a vote threshold of one half certifies nothing beyond the unperturbed "
                       "image, whatever the counts say. Raise τ for a radius > 0.", True, caveat)
    parts = []
    for k, row in zip(k_percents, classes):
        parts.append(f"{int((row == 1).sum()):,} in the top {k:g}% ({int((row == -1).sum()):,} abstain)")
    counted = ("Of {pixels:,} pixels, {what} up to R = {radius:.3g} (RMS {rms:.2g} per pixel): ".format(
        pixels=pixels, radius=radius, rms=rms,
        what="certified for every change of the image" if caveat is None else "passing the paper's test")
        + "; ".join(parts) + ".")
    return Verdict(counted if caveat is None else f"{caveat} {counted}", False, caveat)
