"""Running model-written code: `bubblewrap.py` (a sandbox per execution, limits, the kill from outside, and
the `Zygote` client) and `zygote.py` (the pre-started interpreter inside one sandbox: a script copied into
it, never imported). What it protects against and what not: bubblewrap.py's docstring.
"""
