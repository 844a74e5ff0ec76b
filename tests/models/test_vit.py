"""Vision Transformers: the CAM family on the patch-token grid (certlib.models.cam_layers), gradient methods unchanged, LRP
refused with the reason.

Small randomly initialised models, built offline: a torchvision VisionTransformer (32x32, 8x8 patches, 2 blocks) and
timm's ViT-Tiny and distilled DeiT-Tiny cut to 2 blocks at 64x64 (the DeiT has a class and a distillation token).
The CAM maps are checked against a reference written here from the definitions, without hooks: the model's forward
is replayed by hand up to the last block's first LayerNorm, whose output is made a leaf tensor, and the rest of the
model is run from it; the patch tokens are laid out on the grid by their patch coordinates.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from certlib.attributions import methods as attributions
from certlib.models import cam_layers, registry as models
from certlib.pixel import cert as pixel_cert
from certlib.smoothing import sampling
from certlib.errors import CertlibError

TARGET = 3
CAM_METHODS = ("gradcam", "gradcam_pp", "layercam", "ablationcam")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _torchvision_vit() -> nn.Module:
    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    # torchvision initialises the head to zeros (every logit 0, every gradient 0): give it random weights.
    nn.init.normal_(net.heads.head.weight, std=0.5)
    return net


def _timm_vit(name: str, img_size: int | tuple[int, int] = 64) -> nn.Module:
    torch.manual_seed(0)
    # 2 blocks and 48 features (instead of 12 and 192): AblationCAM's reference re-runs the tail once per feature.
    return timm.create_model(name, pretrained=False, num_classes=10, img_size=img_size, depth=2, embed_dim=48,
                             num_heads=2)


@pytest.fixture(scope="module")
def tv_vit() -> models.LoadedModel:
    return models.from_module(_torchvision_vit(), input_size=(32, 32), num_classes=10, normalize=(MEAN, STD))


@pytest.fixture(scope="module")
def timm_vit() -> models.LoadedModel:
    return models.from_module(_timm_vit("vit_tiny_patch16_224"), input_size=(64, 64), num_classes=10)


@pytest.fixture(scope="module")
def deit() -> models.LoadedModel:
    return models.from_module(_timm_vit("deit_tiny_distilled_patch16_224"), input_size=(64, 64), num_classes=10)


def _copies(size: int, count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand((count, 3, size, size), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ detection and layout

def test_vits_are_detected_by_structure_and_hooked_at_the_last_blocks_first_layernorm(tv_vit, timm_vit, deit):
    assert tv_vit.spec.arch == timm_vit.spec.arch == deit.spec.arch == "vit"
    assert tv_vit.spec.cam_layer == "net.encoder.layers.encoder_layer_1.ln_1"     # under the normalising wrapper
    assert timm_vit.spec.cam_layer == deit.spec.cam_layer == "blocks.1.norm1"
    grids = [cam_layers.feature_map_for(m.module, m.spec.cam_layer) for m in (tv_vit, timm_vit, deit)]
    assert [(g.prefix_tokens, g.patch_size) for g in grids] == [(1, (8, 8)), (1, (16, 16)), (2, (16, 16))]
    # A CNN keeps its feature map as it is; the registry's ViT now declares its token layer.
    resnet = models.from_module(__import__("torchvision").models.resnet18(num_classes=4), input_size=(64, 64),
                                num_classes=4)
    assert resnet.spec.arch == "module" and resnet.spec.cam_layer == "layer4"
    assert isinstance(cam_layers.feature_map_for(resnet.module, "layer4"), cam_layers.ConvFeatureMap)
    assert models.get_spec("vit_b_16").cam_layer == "net.encoder.layers.encoder_layer_11.ln_1"


def test_patch_tokens_land_on_their_patch_positions():
    # The patch embedding's convolution output [B,D,h,w] is the grid; its flattened tokens (after the prefix
    # tokens) must come back to it exactly. A non-square input catches a swapped h and w.
    net = _timm_vit("deit_tiny_distilled_patch16_224", img_size=(32, 64)).eval()
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        conv_grid = net.patch_embed.proj(x)                                  # [2, 48, 2, 4]
        tokens = torch.cat([torch.randn(2, 2, 48), net.patch_embed(x)], dim=1)
    grid = cam_layers.PatchTokenGrid("blocks.1.norm1", prefix_tokens=2, patch_size=(16, 16))
    assert torch.equal(grid.to_grid(tokens, (32, 64)), conv_grid)
    assert torch.equal(grid.from_grid(conv_grid.repeat(3, 1, 1, 1), tokens), tokens.repeat(3, 1, 1))
    with pytest.raises(CertlibError, match="tokens"):
        grid.to_grid(tokens, (64, 64))


# ------------------------------------------------------------------------------------- independent reference

def _tv_split(model: models.LoadedModel):
    """torchvision ViT by hand: (pixels -> (last block's input, its ln_1 output), (block input, ln_1 output) ->
    logits)."""
    net = model.module.net

    def head(x):
        tokens = net._process_input((x - model.module.mean) / model.module.std)
        tokens = torch.cat([net.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = net.encoder.layers[:-1](tokens + net.encoder.pos_embedding)
        return tokens, net.encoder.layers[-1].ln_1(tokens)

    def tail(block_in, a):
        block = net.encoder.layers[-1]
        y = block.self_attention(a, a, a, need_weights=False)[0] + block_in
        y = y + block.mlp(block.ln_2(y))
        return net.heads(net.encoder.ln(y)[:, 0])
    return head, tail


def _timm_split(model: models.LoadedModel):
    """timm ViT / DeiT by hand, the same cut as _tv_split."""
    net = model.module

    def head(x):
        tokens = net.norm_pre(net._pos_embed(net.patch_embed(x)))
        tokens = net.blocks[:-1](tokens)
        return tokens, net.blocks[-1].norm1(tokens)

    def tail(block_in, a):
        block = net.blocks[-1]
        y = block_in + block.ls1(block.attn(a))
        y = y + block.ls2(block.mlp(block.norm2(y)))
        return net.forward_head(net.norm(y))
    return head, tail


def _reference_cams(split, x: torch.Tensor, target: int, prefix: int, patch: int) -> dict[str, torch.Tensor]:
    """Per copy: A = the patch tokens at the last ln_1 ([h·w, D], class/distillation tokens dropped), g = ∂y_t/∂A;
    GradCAM ReLU(A·mean_tokens(g)), LayerCAM ReLU(Σ_d ReLU(g)⊙A), AblationCAM from re-run tails with feature d of
    every patch token zeroed; each [h·w] laid out as patch (i // w, i % w), then upsampled bilinearly."""
    head, tail = split
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    out = {k: [] for k in ("gradcam", "layercam", "ablationcam")}
    for xi in x:
        with torch.no_grad():
            block_in, a = head(xi[None])
        a = a.detach().requires_grad_(True)
        y = tail(block_in, a)[0, target]
        g, = torch.autograd.grad(y, a)
        acts, grads = a.detach()[0, prefix:], g[0, prefix:]                    # [h·w, D]
        maps = {"gradcam": F.relu(acts @ grads.mean(dim=0)),
                "layercam": F.relu((F.relu(grads) * acts).sum(dim=1))}
        with torch.no_grad():
            drops = []
            for d in range(acts.shape[1]):
                ablated = a.detach().clone()
                ablated[0, prefix:, d] = 0
                drops.append(y.detach() - tail(block_in, ablated)[0, target])
            maps["ablationcam"] = F.relu(acts @ (torch.stack(drops) / y.detach()))
        for k, flat in maps.items():
            grid = torch.stack([torch.stack([flat[r * w + c] for c in range(w)]) for r in range(h)])
            out[k].append(grid)
    return {k: F.interpolate(torch.stack(v)[:, None], size=x.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0] for k, v in out.items()}


@pytest.mark.parametrize("which", ["torchvision", "timm", "deit"])
def test_cam_family_on_vits_matches_an_independent_computation(which, tv_vit, timm_vit, deit):
    model, split, prefix, patch, size = {
        "torchvision": (tv_vit, _tv_split(tv_vit), 1, 8, 32),
        "timm": (timm_vit, _timm_split(timm_vit), 1, 16, 64),
        "deit": (deit, _timm_split(deit), 2, 16, 64)}[which]
    x = _copies(size)
    # Random weights: for some classes a ReLU'd map is 0 everywhere. Compare on the first class where none is, so
    # that the check is never 0 == 0.
    for target in range(10):
        ref = _reference_cams(split, x, target, prefix, patch)
        if all(float(v.abs().max()) > 0 for v in ref.values()):
            break
    else:
        pytest.fail(f"{which}: every class gives an all-zero reference map")
    for k, expected in ref.items():
        got = attributions.attribute(model, x, target, k)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_maps_have_the_inputs_size_are_finite_and_batch_exact(tv_vit, timm_vit, deit):
    for model, size in ((tv_vit, 32), (timm_vit, 64), (deit, 64)):
        x = _copies(size, count=2)
        for method in (*CAM_METHODS, "grad", "input_x_gradient"):
            maps = attributions.attribute(model, x, TARGET, method)
            assert maps.shape == (2, size, size) and maps.dtype == torch.float32, (model.spec.label, method)
            assert bool(torch.isfinite(maps).all()), (model.spec.label, method)
            alone = attributions.attribute(model, x[1:], TARGET, method)
            torch.testing.assert_close(maps[1:], alone, rtol=1e-4, atol=1e-6 * (1 + float(alone.abs().max())))


def test_gradient_methods_are_the_plain_input_gradient(tv_vit):
    x = _copies(32, count=2).requires_grad_(True)
    grad, = torch.autograd.grad(tv_vit.module(x)[:, TARGET].sum(), x)
    torch.testing.assert_close(attributions.attribute(tv_vit, x.detach(), TARGET, "grad"), grad.abs().sum(1))


# ------------------------------------------------------------------------------------------ what does not apply

def test_lrp_cam_and_guided_backprop_say_why_not_on_a_vit(tv_vit):
    reasons = {k: attributions.unavailable_reason(k, tv_vit.spec) for k in attributions.METHODS}
    assert {k for k, r in reasons.items() if r} == {"lrp", "cam", "guided_backprop"}
    assert "not available for Vision Transformers (zennit has no rules for attention" in reasons["lrp"]
    assert "class token" in reasons["cam"] and "GELU" in reasons["guided_backprop"]
    with pytest.raises(CertlibError, match="Vision Transformers"):
        attributions.make_attribution("lrp", tv_vit)


# ---------------------------------------------------------------------------------------------- certificate

def test_certified_pixels_sampling_runs_on_a_vit_with_gradcam(tv_vit):
    explain, logits = attributions.for_target(tv_vit, "gradcam", TARGET)
    x = _copies(32, count=1)
    counts = sampling.sample_topk_counts(explain, x, sigma=0.25, n0=4, n=16, k_percents=(50, 25), seed=0,
                                         batch_size=8, logits=logits)
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, 0.25, tau=0.75, alpha=0.1)
    assert cert.classes.shape == (2, 32, 32)
    assert set(np.unique(cert.classes)) <= {-1, 0, 1}
    again = sampling.sample_topk_counts(explain, x, sigma=0.25, n0=4, n=16, k_percents=(50, 25), seed=0,
                                        batch_size=8, logits=logits)
    assert np.array_equal(counts.estimation_ones, again.estimation_ones)          # seeded: the same run


def test_ablationcam_cost_probe_ablates_a_share_of_the_patch_token_channels(timm_vit):
    # A ViT's layer has no cheap tail: each of the 48 channels costs a forward pass, so the probe times 4 of them.
    explainer = attributions.make_attribution("ablationcam", timm_vit)
    probe, scale = explainer.cost_probe(64, 64)
    assert probe is not explainer and probe._channel_limit == 4 and scale == pytest.approx(49 / 5)
    maps = probe.attribute(_copies(64, count=2), TARGET)
    assert maps.shape == (2, 64, 64) and bool(torch.isfinite(maps).all())
    assert explainer._channel_limit is None
