"""The embedded demos: `warmstart demo` (`pump.py`: the whole pump and its ablations on the recipe of
`recipe.py`) and `warmstart demo --kd` (`kd_ablation.py`: distillation signals at equal teacher tokens).

Compose the stages; only the CLI imports them. See ARCHITECTURE.md.
"""
