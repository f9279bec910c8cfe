"""The run directory and the files in it: `directory.py` (RunDir, the stage skeleton `Stage`, fingerprints,
the manifest), `jsonl.py` (records that survive a kill), `costs.py` (the cost ledger and `prices.toml`),
`checkpoint.py` (atomic, resumable checkpoints), `progress.py` (progress bars).

May import the core modules only (config, types, errors). Nothing here imports torch but
`checkpoint.py`, so an API teacher's generate never loads it. See ARCHITECTURE.md.
"""
