"""Distilling on the teacher's distribution, not only its tokens: which signal a run has
(`signal_choice.py`), the teacher's recorded top-k lined up with the student's tokens (`topk.py`), the
KD losses (`losses.py`), one KD micro-batch in bounded memory (`step.py`), and a teacher scoring the
student's own tokens for on-policy distillation (`teacher.py`).

May import policies, envs, lm, runs and the core modules. See ARCHITECTURE.md.
"""
