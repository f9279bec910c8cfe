"""Numbers computed from results: unbiased pass@k (`passk.py`).

Imports nothing of warmstart. See ARCHITECTURE.md.
"""
