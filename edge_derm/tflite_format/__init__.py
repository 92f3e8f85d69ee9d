"""The .tflite format, in one place: parsing the flatbuffer, reading and writing the metadata it carries.

- :mod:`.reader`: the bounds-checked flatbuffer walk (:func:`inspect_tflite`, :class:`ModelInfo`) and the
  ``edge_derm_metadata`` JSON reader (:func:`read_metadata`). Pure Python: the runtime install uses it.
- :mod:`.writer`: embeds the ``edge_derm_metadata`` buffer and TFLite's standard metadata
  (:func:`embed_metadata`, :func:`embed_built_metadata`); the converters use it.
- :mod:`.standard`: TFLite's standard ``TFLITE_METADATA`` flatbuffer and the associated-files archive that
  MediaPipe Tasks and the Android tooling read.

No TensorFlow is imported by any of them. Modules of this package import each other's submodules, never
this ``__init__``.
"""

from .reader import (
    FILE_IDENTIFIER,
    FLOAT_TYPES,
    METADATA_NAME,
    STANDARD_METADATA_NAME,
    TENSOR_TYPES,
    ModelInfo,
    OpInfo,
    TensorInfo,
    inspect_tflite,
    read_metadata,
    validate_tflite,
)
from .standard import pack_associated_files, read_associated_files, standard_metadata
from .writer import embed_built_metadata, embed_metadata, object_io

__all__ = ["FILE_IDENTIFIER", "FLOAT_TYPES", "METADATA_NAME", "STANDARD_METADATA_NAME", "TENSOR_TYPES",
           "ModelInfo", "OpInfo", "TensorInfo", "embed_built_metadata", "embed_metadata", "inspect_tflite",
           "object_io", "pack_associated_files", "read_associated_files", "read_metadata", "standard_metadata",
           "validate_tflite"]
