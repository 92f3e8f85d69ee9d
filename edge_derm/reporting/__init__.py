"""One report renderer: a document model (headings, paragraphs, tables, images) rendered to markdown and
HTML, shared number formatting, and the sections of each artefact folder.

- :mod:`.format`: how a figure is written (percentages, points, milliseconds, the en dash for "none").
- :mod:`.document`: the document model and its two renderers.
- :mod:`.metrics`: the tables of one evaluation (``compute_metrics`` output).
- :mod:`.run`, :mod:`.convert`, :mod:`.benchmark`: the sections of run, convert and benchmark folders.
- :mod:`.page`: ``edge-derm report`` (find the folders, build, write).

Users: ``edge_derm.report`` (``edge-derm report``), ``edge_derm.evaluation.report`` (an evaluation's
report.md) and ``edge_derm.benchmarks.report`` (the benchmark's table and CSV). Importing this package
imports nothing else.
"""
