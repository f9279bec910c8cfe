"""`warmstart export`: a run's curated data as a dataset TRL, axolotl and `datasets` read.

`schema.py` (the columns of a row, described once), `rows.py` (a trajectory as one row: OpenAI-shaped
messages, verdict and provenance columns), `writers.py` (jsonl, parquet, hf: `save_to_disk`) with
`arrow.py` (the Arrow schema, for the two formats that need pyarrow), `card.py` (the dataset card
README.md, its YAML header written by huggingface_hub's `DatasetCardData`), `output.py` (the output directory, replaced whole or
not at all), `exporter.py` (the command's steps, from the run directory to the written dataset).

Reads a run directory only: imports runs, types, errors, config and metrics, never a stage, the report
or torch. pyarrow and datasets (the `datasets` extra) are imported only by the formats that need them.
See ARCHITECTURE.md and docs/export.md.
"""
