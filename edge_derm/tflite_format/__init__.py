"""The .tflite format, in one place: parsing the flatbuffer, reading and writing the metadata it carries.

- :mod:`.reader`: the bounds-checked flatbuffer walk (:func:`inspect_tflite`, :class:`ModelInfo`) and the
  ``edge_derm_metadata`` JSON reader (:func:`read_metadata`). Pure Python: the runtime install uses it.
- :mod:`.writer`: embeds the ``edge_derm_metadata`` buffer and TFLite's standard metadata
  (:func:`embed_metadata`, :func:`embed_built_metadata`); the converters use it.
- :mod:`.standard`: TFLite's standard ``TFLITE_METADATA`` flatbuffer and the associated-files archive that
  MediaPipe Tasks and the Android tooling read.

No TensorFlow is imported by any of them. Import the submodule you need (the runtime needs only ``reader``,
which imports neither ``writer`` nor ``flatbuffers``); this ``__init__`` re-exports nothing, so it loads nothing.
"""
