"""The training losses against hand-computed small cases, and their gradient directions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip_ingest.model.losses import (
    ArcMarginLoss,
    InfoNCELoss,
    MultiCaptionArcMarginLoss,
    caption_masks,
    margin_cosine,
)


def test_margin_cosine_adds_the_angle_and_falls_back_past_pi():
    theta = math.pi / 3
    value = margin_cosine(torch.tensor([math.cos(theta)]), 0.1)
    assert value.item() == pytest.approx(math.cos(theta + 0.1), abs=1e-6)
    near_pi = torch.tensor([-0.999])  # theta + m > pi
    expected = -0.999 - math.sin(math.pi - 0.1) * 0.1
    assert margin_cosine(near_pi, 0.1).item() == pytest.approx(expected, abs=1e-6)


def _arc(weight: list[list[float]], **kw) -> ArcMarginLoss:
    loss = ArcMarginLoss(len(weight), len(weight[0]), **kw)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor(weight))
    return loss


def test_arc_margin_matches_hand_computation():
    loss = _arc([[1.0, 0.0], [0.0, 1.0]], scale=30.0, margin=0.1)
    x = torch.tensor([[2.0, 2.0]])  # 45 degrees from both proxies, not normalised
    logits = torch.tensor([30 * math.cos(math.pi / 4 + 0.1), 30 * math.cos(math.pi / 4)])
    expected = -torch.log_softmax(logits, 0)[0]
    assert loss(x, torch.tensor([0])).item() == pytest.approx(expected.item(), rel=1e-5)


def test_arc_margin_gradient_pulls_embedding_toward_its_proxy():
    loss = _arc([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = torch.tensor([[0.3, 1.0]], requires_grad=True)
    loss(x, torch.tensor([0])).backward()
    moved = x.detach() - 0.1 * x.grad
    cos = lambda v: F.cosine_similarity(v, torch.tensor([[1.0, 0.0]])).item()  # noqa: E731
    assert cos(moved) > cos(x.detach())
    # and the true proxy moves toward the embedding
    w0 = loss.weight.detach()[0] - 0.1 * loss.weight.grad[0]
    assert F.cosine_similarity(w0, x.detach()[0], dim=0) > F.cosine_similarity(loss.weight.detach()[0], x.detach()[0], dim=0)


def test_arc_margin_proxies_learn_at_100x_lr():
    loss = ArcMarginLoss(5, 8)
    (group,) = loss.param_groups(1e-4)
    assert group["lr"] == pytest.approx(1e-2)
    assert group["params"][0] is loss.weight and loss.weight.shape == (5, 8)


def test_multi_caption_matches_hand_computation_and_ignores_uncaptioned_images():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caps = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    positive = torch.tensor([[True, True, False], [False, False, False]])  # image 1 has no captions
    loss = MultiCaptionArcMarginLoss(scale=10.0, margin=0.2)
    cos = [1.0, 0.6, 0.0]
    logits = torch.tensor([10 * margin_cosine(torch.tensor(cos[0]), 0.2).item(),
                           10 * margin_cosine(torch.tensor(cos[1]), 0.2).item(), 10 * cos[2]])
    expected = -torch.log_softmax(logits, 0)[:2].mean()
    assert loss(img, caps, positive).item() == pytest.approx(expected.item(), rel=1e-5)
    # the uncaptioned image changes nothing and gets no gradient
    img_g = img.clone().requires_grad_(True)
    loss(img_g, caps, positive).backward()
    assert torch.count_nonzero(img_g.grad[1]) == 0


def test_multi_caption_negative_mask_drops_columns():
    img = torch.tensor([[1.0, 0.2]])
    caps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    loss = MultiCaptionArcMarginLoss()
    positive = torch.tensor([[True, False, False]])
    without_last = loss(img, caps[:2], positive[:, :2])
    masked = loss(img, caps, positive, negative=torch.tensor([[False, True, False]]))
    assert masked.item() == pytest.approx(without_last.item(), rel=1e-6)
    assert loss(img, caps, positive).item() > masked.item()  # an extra negative raises the loss


def test_multi_caption_gradient_moves_image_toward_its_captions():
    img = torch.tensor([[0.0, 1.0]], requires_grad=True)
    caps = torch.tensor([[1.0, 0.0], [-1.0, 0.3]])
    MultiCaptionArcMarginLoss()(img, caps, torch.tensor([[True, False]])).backward()
    moved = img.detach() - 0.1 * img.grad
    assert F.cosine_similarity(moved, caps[:1]).item() > F.cosine_similarity(img.detach(), caps[:1]).item()


def test_multi_caption_without_any_caption_is_zero_and_differentiable():
    img = torch.randn(3, 4, requires_grad=True)
    out = MultiCaptionArcMarginLoss()(img, torch.randn(2, 4), torch.zeros(3, 2, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(img.grad) == 0


def test_multi_caption_rejects_non_boolean_masks():
    with pytest.raises(TypeError):
        MultiCaptionArcMarginLoss()(torch.randn(1, 2), torch.randn(1, 2), torch.ones(1, 1))


def test_caption_masks_share_columns_and_exclude_same_class():
    ids, pos, neg = caption_masks([[5, 7], [7], [], [9]], torch.tensor([0, 0, 1, 1]), same_class_negatives=False)
    assert ids.tolist() == [5, 7, 9]
    assert pos.tolist() == [[True, True, False], [False, True, False], [False] * 3, [False, False, True]]
    # image 1 (class 0) must not treat image 0's caption 5 as a negative; image 2 (class 1) not caption 9
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False], [True, True, False]]
    _, _, all_neg = caption_masks([[5, 7], [7], [], [9]])
    assert torch.equal(all_neg, ~pos)


def test_info_nce_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    logits = 20 * img @ txt.T
    target = torch.arange(2)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    got = InfoNCELoss()(img, txt, torch.tensor(math.log(20.0)))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_info_nce_label_smoothing_matches_cross_entropy_with_smoothing():
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    logits = 5 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target, label_smoothing=0.1)
                + F.cross_entropy(logits.T, target, label_smoothing=0.1)) / 2
    got = InfoNCELoss(label_smoothing=0.1)(img, txt, torch.tensor(math.log(5.0)))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() != pytest.approx(InfoNCELoss()(img, txt, torch.tensor(math.log(5.0))).item(), rel=1e-3)


def test_logit_scale_keeps_its_gradient_above_the_cap_and_is_clamped_in_place():
    """Clamping inside the loss would give a zero gradient once the scale passes 100."""
    scale = torch.nn.Parameter(torch.tensor(math.log(1000.0)))
    InfoNCELoss()(torch.randn(4, 3), torch.randn(4, 3), scale).backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0
    InfoNCELoss.clamp_logit_scale(scale)
    assert scale.item() == pytest.approx(math.log(100.0))
    low = torch.nn.Parameter(torch.tensor(-2.0))
    InfoNCELoss.clamp_logit_scale(low)
    assert low.item() == 0.0


def test_info_nce_gradient_pulls_pairs_together():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.5, 0.5], [0.2, 1.0]], requires_grad=True)
    InfoNCELoss()(img, txt, torch.tensor(math.log(10.0))).backward()
    moved = txt.detach() - 0.1 * txt.grad
    assert F.cosine_similarity(moved[0], img[0], dim=0) > F.cosine_similarity(txt.detach()[0], img[0], dim=0)


def test_info_nce_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="pair up"):
        InfoNCELoss()(torch.randn(2, 4), torch.randn(3, 4), torch.tensor(1.0))


def test_multi_caption_reference_variant_adds_a_tenth_of_the_max_term_and_averages_the_whole_batch():
    img = F.normalize(torch.randn(3, 4), dim=-1)
    caps = F.normalize(torch.randn(3, 4), dim=-1)
    pos = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    paper = MultiCaptionArcMarginLoss(scale=10.0, margin=0.2)(img, caps, pos)
    reference = MultiCaptionArcMarginLoss(scale=10.0, margin=0.2, variant="reference")(img, caps, pos)
    # by hand, the authors' formula: rows of a soft-target cross-entropy + 0.1 max, mean over all 3 images
    cos = img @ caps.T
    logits = 10.0 * torch.where(pos, margin_cosine(cos, 0.2), cos)
    log_prob = F.log_softmax(logits, dim=1)
    target = pos.float() / pos.sum(dim=1, keepdim=True).clamp_min(1)
    rows = -(target * log_prob).sum(dim=1) + 0.1 * (-(1 - target) * log_prob).max(dim=1).values
    assert reference.item() == pytest.approx(rows.mean().item(), rel=1e-5)
    assert paper.item() == pytest.approx((-(target * log_prob).sum(dim=1))[:2].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="variant"):
        MultiCaptionArcMarginLoss(variant="other")
