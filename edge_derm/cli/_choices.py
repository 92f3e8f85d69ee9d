"""Enum choices shared by several CLI modules."""

from enum import Enum


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"
