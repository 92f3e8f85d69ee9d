"""TFLite's standard model metadata: moved to :mod:`edge_derm.tflite_format.standard` (the .tflite format's
module); re-exported here under the names the converters and tests used."""

from __future__ import annotations

from edge_derm.tflite_format.standard import (  # noqa: F401
    CALIBRATION_FILE,
    DISPLAY_NAMES_FILE,
    FILE_IDENTIFIER,
    LABELS_FILE,
    METADATA_NAME,
    MIN_PARSER_VERSION,
    pack_associated_files,
    read_associated_files,
    standard_metadata,
)
