"""The `swe` environment: bug-fix tasks mined from real Python packages, graded by their own pytest suites.

- `env.py` — the environment (tools, replayed state, the reference solver); `tools.py` — the working
  copy rebuilt from the conversation's writes and edits.
- `grader.py` — the real-suite grader; `paths.py` — which of the agent's changes it applies;
  `suite.py` — one pytest run in the sandbox; `runner.py` — the script that runs pytest inside (read as
  a file, never imported here); `junit.py` — outcomes from the JUnit XML.
- `mining.py` — `warmstart tasks mine-bugs`; `mutations.py` — candidate bugs; `snapshot.py` — a source
  tree as text; `taskset.py` — the task set on disk.

docs/swe.md says how to mine, and what the grader defends against and why.
"""
