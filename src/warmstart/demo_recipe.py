"""The embedded default recipe of `warmstart demo` (no imports: the CLI reads it before torch loads)."""

DEMO_RECIPE = {
    "run": {"seed": 0},
    "env": {"name": "arithmetic", "options": {"ops": ["+", "-", "*"], "digits": [1, 2], "teacher_error_rate": 0.1}},
    "tasks": {"train": 3000, "eval": 200},
    "generate": {"teacher": "reference"},
    "sft": {"steps": 300},
    "eval": {"k": 4, "max_new_tokens": 160},
}
