"""The repository's measurement scripts (not installed): each regenerates one file in ``results/``.

Run them from the repository root as modules, e.g. ``python -m benchmarks.measure_latency``; they import
the installed ``edge_derm`` package (its harness is ``edge_derm.benchmarks``) and nothing else of the tree.
"""
