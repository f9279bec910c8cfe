"""The update steps, apart from the stages that loop over them: SFT / KD (`sft.py`), GRPO (`grpo.py`:
collect groups, advantages, the clipped update), their losses (`losses.py`) and tokenized, packed
training rows (`data.py`). This is what the benchmarks in bench/ import to time a step.

May import distill and everything below it. See ARCHITECTURE.md.
"""
