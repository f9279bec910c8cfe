"""A run's report: `html.py` builds report.html (tables with intervals, figures, failures) from the files
the stages wrote; `figures.py` draws its figures (matplotlib, inline SVG); `lineage.py` traces each eval
row back through the stages that trained it, for its cost; `attempts.py` says what stages whose last run
failed spent, and marks a failed eval's results as the earlier eval's; `target.py` checks where the page
goes (report.html, or `--out`) before any work; `markup.py` holds the HTML table the sections share;
`checks.py` checks the shape of what the report reads from the run's files first (a hand-edited file is
one error naming the field).

Reads the run directory only: imports runs, metrics and the core modules, never the stages. See
ARCHITECTURE.md.
"""
