"""Local language models, independent of any stage: loading (`models.py`, `paths.py`), the tiny student
(`tinymodel.py`), chat rendering and loss masks (`chat.py`), tool calls as text (`toolcalls.py`),
sampling (`generation.py`), the multi-turn rollout loop (`rollout.py`), log-probs of given tokens
(`scoring.py`), a shared prompt run once for the rows that share it (`shared_prefix.py`),
cross-entropy through the output head in chunks (`linear_ce.py`), bf16 on CPU (`precision.py`, with
short rows' attention in `short_attention.py` and the weights' bf16 copies kept in `weight_casts.py`),
devices and precision (`device.py`) and the decoder through torch.compile (`compiled.py`).

May import the core modules only (config, types, errors). `paths.py` and `toolcalls.py` import no torch:
the environments and the policy strings use them. See ARCHITECTURE.md.
"""
