"""Distillation losses against hand-computed values; the consecutive-KD schedule of the official scripts."""
import math

import pytest
import torch

from bnext_lib.distill import ConsecutiveKD, MultiTeacherLoss, soft_target_ce


def _ce(p_teacher_logits, s_logits):
    pt = [math.exp(v) for v in p_teacher_logits]
    pt = [v / sum(pt) for v in pt]
    lse = math.log(sum(math.exp(v) for v in s_logits))
    return -sum(p * (s - lse) for p, s in zip(pt, s_logits))


S = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
T1 = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
T2 = torch.tensor([[3.0, 0.0, 0.0], [-1.0, -1.0, 2.0]])


def test_soft_target_ce_by_hand():
    # uniform teacher, student (2, 0, -1): log-sum-exp = log(e^2 + 1 + e^-1)
    lse = math.log(math.exp(2) + 1 + math.exp(-1))
    expected0 = -(1 / 3) * ((2 - lse) + (0 - lse) + (-1 - lse))
    got = soft_target_ce(S, T1, "none")
    assert got[0].item() == pytest.approx(expected0, rel=1e-6)
    assert got[1].item() == pytest.approx(_ce([0, 3, 0], [0, 1, 0]), rel=1e-6)
    assert soft_target_ce(S, T1).item() == pytest.approx(got.mean().item())


def test_soft_target_ce_equals_kl_plus_teacher_entropy():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    pt = t.softmax(1)
    kl = (pt * (pt.log() - s.log_softmax(1))).sum(1)
    entropy = -(pt * pt.log()).sum(1)
    torch.testing.assert_close(soft_target_ce(s, t, "none"), kl + entropy)


def test_adaptive_weights_by_hand_batch_and_instance():
    h = [[_ce(T1[n].tolist(), S[n].tolist()), _ce(T2[n].tolist(), S[n].tolist())] for n in range(2)]
    alpha = [[math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))] for a, b in h]
    mean_alpha = [(alpha[0][k] + alpha[1][k]) / 2 for k in range(2)]
    mean_h = [(h[0][k] + h[1][k]) / 2 for k in range(2)]
    loss, a = MultiTeacherLoss("adaptive", "batch")(S, [T1, T2])
    # official: sum_k mean_n(alpha_nk) * mean_n(L_nk) / K
    assert loss.item() == pytest.approx(sum(mean_alpha[k] * mean_h[k] for k in range(2)) / 2, rel=1e-6)
    assert a.tolist() == pytest.approx(mean_alpha, rel=1e-6)
    loss_i, _ = MultiTeacherLoss("adaptive", "instance")(S, [T1, T2])
    assert loss_i.item() == pytest.approx(sum(alpha[n][k] * h[n][k] for n in range(2) for k in range(2)) / 4,
                                          rel=1e-6)


def test_the_teacher_fitted_worse_gets_more_weight():
    s = torch.tensor([[5.0, 0.0]])
    near, far = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    _, alpha = MultiTeacherLoss()(s, [near, far])
    assert alpha[1] > alpha[0]


def test_fixed_weights_and_single_teacher():
    loss, alpha = MultiTeacherLoss("fixed")(S, [T1, T2])
    expected = 0.5 * (soft_target_ce(S, T1) + soft_target_ce(S, T2)) / 2
    assert loss.item() == pytest.approx(expected.item()) and alpha.tolist() == [0.5, 0.5]
    single, alpha1 = MultiTeacherLoss()(S, [T1])
    assert single.item() == pytest.approx(soft_target_ce(S, T1).item()) and alpha1.tolist() == [1.0]


def test_gradient_reaches_student_only():
    s = S.clone().requires_grad_(True)
    t = T1.clone().requires_grad_(True)
    MultiTeacherLoss()(s, [t, T2])[0].backward()
    assert s.grad is not None and t.grad is None


def test_bad_options():
    with pytest.raises(ValueError):
        MultiTeacherLoss("learned")
    with pytest.raises(ValueError):
        MultiTeacherLoss(granularity="class")
    with pytest.raises(ValueError, match="3 fixed weights for 2"):
        MultiTeacherLoss("fixed", fixed_weights=[0.2, 0.3, 0.5])(S, [T1, T2])


def test_official_consecutive_rounds():
    large = ConsecutiveKD(["b0", "b4", "convnext_t"], "convnext_t", 512)  # BNext-L script
    assert large.teachers_for(0) == ["b0", "convnext_t"] and large.teachers_for(170) == ["b0", "convnext_t"]
    assert large.teachers_for(171) == ["b4", "convnext_t"] and large.teachers_for(341) == ["b4", "convnext_t"]
    assert large.teachers_for(342) == ["convnext_t", "convnext_t"] and large.teachers_for(511)[0] == "convnext_t"
    middle = ConsecutiveKD.from_list(["b0", "b2", "b4"], 512)
    assert middle.teachers_for(255) == ["b0", "b4"] and middle.teachers_for(256) == ["b2", "b4"]
    tiny = ConsecutiveKD.from_list(["b0", "b2"], 512)
    assert all(tiny.teachers_for(e) == ["b0", "b2"] for e in (0, 300, 511))
    assert ConsecutiveKD.from_list(["b2"], 10).teachers_for(5) == ["b2"]
