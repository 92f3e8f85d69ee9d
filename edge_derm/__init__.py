"""edge-derm: skin-lesion photographs to small, fast, verified on-device classifiers.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` (before TensorFlow is first imported
anywhere) so that ``tf.keras`` is Keras 2 (tf-keras), the only Keras that
tensorflow-model-optimization supports. Nothing else happens at import time; TensorFlow
itself is imported lazily by the modules that need it.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
