"""A run's report: `html.py` builds report.html (tables with intervals, figures, failures) from the files
the stages wrote; `figures.py` draws its figures (matplotlib, inline SVG); `lineage.py` traces each eval
row back through the stages that trained it, for its cost; `checks.py` checks the shape of what the report
reads from the run's files first (a hand-edited file is one error naming the field).

Reads the run directory only: imports runs, metrics and the core modules, never the stages. See
ARCHITECTURE.md.
"""
