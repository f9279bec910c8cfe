"""The maths of the distillation losses, checked against closed forms and known answers."""

import math

import torch

from warmstart.distill.losses import dense_kl, mixed_token_loss, reverse_kl_advantages, sparse_kl
from warmstart.train.losses import clipped_policy_loss


def topk_support(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logq = torch.log_softmax(teacher_logits, dim=-1)
    values, ids = logq.topk(k, dim=-1)
    return ids, values


def test_dense_kl_matches_the_definition():
    p, q = torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[0.6, 0.3, 0.1]])
    expected = sum(qi * math.log(qi / pi) for pi, qi in zip(p[0].tolist(), q[0].tolist()))
    assert torch.allclose(dense_kl(p.log(), q.log()), torch.tensor([expected]), atol=1e-6)
    assert dense_kl(q.log(), q.log()).abs().item() < 1e-7


def test_sparse_kl_with_the_whole_vocabulary_equals_dense_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 11), torch.randn(6, 11) * 3
    ids, logq = topk_support(teacher, 11)
    assert torch.allclose(sparse_kl(student, ids, logq), dense_kl(student, teacher), atol=1e-5)


def test_sparse_kl_is_the_kl_of_the_tail_bucket_coarsening_and_at_most_dense():
    torch.manual_seed(1)
    student, teacher = torch.randn(5, 9), torch.randn(5, 9) * 2
    ids, logq = topk_support(teacher, 3)
    p, q = torch.softmax(student, -1), torch.softmax(teacher, -1)
    for n in range(5):
        support = ids[n].tolist()
        rest = [v for v in range(9) if v not in support]
        buckets_p = [p[n, v].item() for v in support] + [p[n, rest].sum().item()]
        buckets_q = [q[n, v].item() for v in support] + [q[n, rest].sum().item()]
        expected = sum(b * math.log(b / a) for a, b in zip(buckets_p, buckets_q))
        assert abs(sparse_kl(student[n : n + 1], ids[n : n + 1], logq[n : n + 1]).item() - expected) < 1e-5
    assert (sparse_kl(student, ids, logq) <= dense_kl(student, teacher) + 1e-6).all()


def test_sparse_kl_gradient_matches_the_closed_form():
    """d KL / d z_v = p_v - q_v on the support, p_v - q_tail * p_v / p_tail off it."""
    torch.manual_seed(2)
    student = torch.randn(3, 7, requires_grad=True)
    teacher = torch.randn(3, 7)
    ids, logq = topk_support(teacher, 2)
    sparse_kl(student, ids, logq).sum().backward()
    p, q = torch.softmax(student.detach(), -1), torch.softmax(teacher, -1)
    expected = torch.empty_like(p)
    for n in range(3):
        support = set(ids[n].tolist())
        q_tail = 1 - sum(q[n, v] for v in support)
        p_tail = 1 - sum(p[n, v] for v in support)
        for v in range(7):
            expected[n, v] = p[n, v] - q[n, v] if v in support else p[n, v] - q_tail * p[n, v] / p_tail
    assert torch.allclose(student.grad, expected, atol=1e-5)


def test_dense_kl_gradient_is_p_minus_q():
    torch.manual_seed(3)
    student, teacher = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5)
    dense_kl(student, teacher).sum().backward()
    assert torch.allclose(student.grad, torch.softmax(student.detach(), -1) - torch.softmax(teacher, -1), atol=1e-6)


def test_padding_entries_of_the_support_contribute_nothing():
    torch.manual_seed(4)
    student, teacher = torch.randn(2, 8), torch.randn(2, 8)
    ids, logq = topk_support(teacher, 3)
    padded_ids = torch.cat([ids, ids[:, :1].expand(2, 2)], dim=1)  # padding repeats the row's first id
    padded_logq = torch.cat([logq, torch.full((2, 2), float("-inf"))], dim=1)
    assert torch.allclose(sparse_kl(student, padded_ids, padded_logq), sparse_kl(student, ids, logq), atol=1e-6)


def test_whole_vocabulary_support_keeps_gradients_finite():
    student = torch.randn(2, 4, requires_grad=True)
    ids, logq = topk_support(torch.randn(2, 4), 4)
    sparse_kl(student, ids, logq).sum().backward()
    assert torch.isfinite(student.grad).all()


def test_mixed_loss_weights_and_positions_without_a_teacher():
    ce, kd = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    has = torch.tensor([True, True, False])
    assert mixed_token_loss(ce, kd, has, 0.0).tolist() == [2.0, 2.0, 2.0]  # kd_weight 0 is plain SFT
    assert mixed_token_loss(ce, kd, has, 0.25).tolist() == [1.75, 1.75, 2.0]
    assert mixed_token_loss(ce, kd, has, 1.0).tolist() == [1.0, 1.0, 2.0]


def test_reverse_kl_direction_and_sign_on_a_known_case():
    """p = (0.5, 0.5), q = (0.9, 0.1): the advantages average to -KL(p || q), not -KL(q || p)."""
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.3681
    tokens = torch.tensor([[0, 1]])
    advantages = reverse_kl_advantages(p.log()[tokens], q.log()[tokens], torch.ones(1, 2))
    expectation = (p * advantages[0]).sum().item()  # each token weighted by how often the student samples it
    assert abs(expectation + reverse) < 1e-6 and abs(expectation + forward) > 0.1
    # The token the teacher finds unlikely is punished, the likely one rewarded.
    assert advantages[0, 0] > 0 > advantages[0, 1]


def test_policy_gradient_on_reverse_kl_advantages_moves_the_student_to_the_teacher():
    logits = torch.zeros(2, requires_grad=True)
    q = torch.tensor([0.9, 0.1])
    optimizer = torch.optim.SGD([logits], lr=0.5)
    before = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=logits.detach()), torch.distributions.Categorical(probs=q)
    )
    for _ in range(50):
        logp = torch.log_softmax(logits, -1)
        # Exact expectation over both tokens instead of sampling: weights p(x) as the sampler would.
        tokens = torch.tensor([[0, 1]])
        old = logp.detach()[tokens]
        advantages = reverse_kl_advantages(old, q.log()[tokens], torch.ones(1, 2))
        loss = (logp.exp().detach()[tokens] * -(logp[tokens] * advantages)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=logits.detach()), torch.distributions.Categorical(probs=q)
    )
    assert after < before / 10
    assert torch.allclose(torch.softmax(logits.detach(), -1), q, atol=0.02)


def test_masked_tokens_contribute_nothing():
    torch.manual_seed(5)
    student, teacher = torch.randn(2, 4), torch.randn(2, 4)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    a = reverse_kl_advantages(student, teacher, mask)
    b = reverse_kl_advantages(student + (1 - mask) * 100, teacher - (1 - mask) * 50, mask)
    assert torch.equal(a, b) and (a[mask == 0] == 0).all()
    # Per-token advantages through the clipped loss: gradients at masked tokens are exactly zero.
    logp = torch.randn(2, 4, requires_grad=True)
    clipped_policy_loss(logp, logp.detach(), a, mask).backward()
    assert (logp.grad[mask == 0] == 0).all() and (logp.grad[mask == 1] != 0).any()
