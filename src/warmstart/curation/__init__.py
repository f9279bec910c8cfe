"""What curate decides about a trajectory beyond its verdict, as pure functions over records.

`text.py` (normalized words, segments and the content signature: the numbers, math symbols and
identifiers a text is about), `near_dup.py` (near-duplicate texts by MinHash LSH within one content
signature), `dedup.py` (exact duplicates, then near-duplicate prompts task by task and near-duplicate
trajectories, the best-verified member of each cluster kept), `contamination.py` (whole items and
n-grams of the eval split and benchmark texts), `benchmarks.py` (benchmark files read: JSONL or
parquet, the text field found), `difficulty.py` (the teacher's pass rate per task, and which tasks lie
outside a range).

May import the core modules only (config, types, errors) and `runs.jsonl`; never torch or transformers,
never a stage, an environment or a policy: `stages/curate.py` composes it. See ARCHITECTURE.md.
"""
