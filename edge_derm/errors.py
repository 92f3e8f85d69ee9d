"""The EdgeDermError family: library errors that the CLI turns into one line and exit code 1.

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
