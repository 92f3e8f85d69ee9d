"""Keras -> TFLite: quantisation presets, calibration, QAT, verification, collapse debugging, metadata.

Imported as ``edge_derm.converters``. Importing it is cheap (no TensorFlow): the presets table
(:mod:`.presets`) is what the CLI and the benchmark loop read; :func:`.convert.convert_run`
does the work and imports TensorFlow when called.
"""

from .presets import IO_TYPES, MODES, PRESETS, Preset, Tolerance, get_preset, resolve_io

__all__ = ["IO_TYPES", "MODES", "PRESETS", "Preset", "Tolerance", "get_preset", "resolve_io"]
