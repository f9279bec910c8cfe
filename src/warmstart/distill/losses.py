"""Distillation objectives on the teacher's distribution, as small pure functions.

N = scored positions (already gathered from the masked tokens), V = vocabulary, K = support size.
Every KL here is forward, KL(teacher || student) = sum_v q(v) (log q(v) - log p(v)), except
`reverse_kl_advantages`, which is the on-policy direction (see there).

Sparse KD: an API gives the teacher's top-k log-probs (plus the sampled token's), not the whole
distribution. The mass outside that support is kept as one "tail" bucket rather than renormalizing the
support: the loss is the exact KL between the (K + 1)-bucket coarsenings of teacher and student
(support tokens one by one, everything else pooled), so

- with the whole vocabulary as support the tail is empty and it equals the dense KL (tested);
- it never exceeds the dense KL (coarsening loses information, never adds it);
- the student is told how much mass belongs outside the support, instead of being free to pile mass
  there (renormalizing both sides over the support would ignore the student's tail entirely).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def dense_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per position. student_logits, teacher_logits: [N, V] -> [N]."""
    logp = torch.log_softmax(student_logits.float(), dim=-1)
    logq = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (logq.exp() * (logq - logp)).sum(dim=-1)


def sparse_kl(student_logits: torch.Tensor, support_ids: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL of the teacher's top-k support plus a tail bucket, per position.

    student_logits: [N, V]; support_ids: [N, K] token ids; teacher_logp: [N, K] the teacher's log-probs
    of those ids, -inf on padding entries (whose id must repeat a real id of the row, e.g. its first).
    Ids within a row are distinct apart from padding. -> [N].
    """
    logits = student_logits.float()
    log_norm = torch.logsumexp(logits, dim=-1)  # [N]
    logp_support = logits.gather(-1, support_ids) - log_norm.unsqueeze(-1)  # [N, K]
    valid = teacher_logp > NEG_INF
    q_support = torch.where(valid, teacher_logp.exp(), 0.0)
    head = torch.where(valid, q_support * (teacher_logp - logp_support), 0.0).sum(dim=-1)
    in_support = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, support_ids, True)
    whole_vocab = in_support.all(dim=-1)
    # A finite fill keeps the gradient finite when the support is the whole vocabulary (tail unused then).
    log_p_tail = torch.logsumexp(logits.masked_fill(in_support, -1e30), dim=-1) - log_norm
    # Rounded API log-probs can sum to a hair over 1: the tail is clamped at 0.
    q_tail = torch.where(whole_vocab, 0.0, (1.0 - q_support.sum(dim=-1)).clamp(min=0.0))
    tail = torch.where(q_tail > 0, q_tail * (q_tail.clamp(min=1e-30).log() - log_p_tail), 0.0)
    return head + tail


def mixed_token_loss(ce: torch.Tensor, kd: torch.Tensor, has_teacher: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """(1 - w) * CE + w * KD where the teacher's distribution is known, plain CE elsewhere. All [N]."""
    return torch.where(has_teacher, (1.0 - kd_weight) * ce + kd_weight * kd, ce)


def reverse_kl_advantages(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token advantages of on-policy distillation: log q(x_t) - log p(x_t) on the student's tokens.

    student_logp, teacher_logp, mask: [B, T] (log-probs of the sampled tokens) -> [B, T], 0 where masked.
    Under the student's own samples, E[log p - log q] is the reverse KL(p || q), so the negated
    difference is a per-token reward whose expectation is -KL: a policy gradient on it lowers the
    reverse KL (mode-seeking: the student is punished for tokens the teacher finds unlikely, not for
    missing some of the teacher's modes). Each token gets its own term (no sum over later tokens).
    """
    return (teacher_logp - student_logp) * mask
