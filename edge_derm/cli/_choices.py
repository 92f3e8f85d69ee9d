"""Enum choices shared by several CLI modules."""

from enum import Enum

from edge_derm.converters.presets import MODES

#: The quantisation modes (``--quantize``, ``--variant``), from the one preset table.
Mode = Enum("Mode", {name: name for name in MODES}, type=str)


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"
