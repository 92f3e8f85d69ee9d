"""``edge-derm report``: one self-contained HTML page and a markdown twin for any artefact folder.

The renderer lives in :mod:`edge_derm.reporting` (document model, formatting, one module per section
family; :mod:`edge_derm.reporting.page` builds and writes the report); this module keeps the names
callers import.
"""

from __future__ import annotations

from edge_derm.reporting.page import Report, build_report, find_sections, write_report

__all__ = ["Report", "build_report", "find_sections", "write_report"]
