"""The EdgeDermError family: library errors that the CLI turns into one line and exit code 1 (130 for
:class:`Interrupted`).

Messages say what is wrong and what to do, in one line.
"""


class EdgeDermError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class DataError(EdgeDermError):
    """A dataset, manifest, image or CSV problem."""


class ConfigError(EdgeDermError):
    """An invalid configuration, plan, option value or unknown name."""


class ModelError(EdgeDermError):
    """A missing, corrupt or incompatible model, run folder or weights file."""


class ConversionError(EdgeDermError):
    """A conversion or verification failure."""


class DeviceError(EdgeDermError):
    """An adb / Android device fault."""


class OutputExistsError(EdgeDermError):
    """An output folder or file exists and --force was not given."""


class Interrupted(EdgeDermError):
    """Ctrl-C or SIGTERM, with what was kept; the CLI prints it as one line and exits 130."""


def data_error_from_tf(exc: BaseException) -> "DataError | None":
    """The project's own error inside a TensorFlow one (an image decoded by ``tf.numpy_function`` that
    became unreadable after the build) as a one-line DataError; None for anything else."""
    import re

    if not type(exc).__module__.startswith(("tensorflow", "tf_keras", "keras")):
        return None
    m = re.search(r"edge_derm\.errors\.\w+Error: ([^\n]+)|edge_derm\.data\.images\.ImageError: ([^\n]+)", str(exc))
    if m is None:
        return None
    text = (m.group(1) or m.group(2)).strip()
    return DataError(f"{text}; the image changed after the dataset was built: fix or remove it and rebuild the dataset")
