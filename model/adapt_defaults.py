"""Defaults of the guided run and of measuring on a user's folder, importable without torch
(the ``--help`` of every command loads none of the heavy modules)."""

DEFAULT_HELD_OUT_FRACTION = 0.25
"""Share of labels held out to judge the result: a quarter, so that a few dozen labels still
leave several unseen ones to measure on."""
DEFAULT_VAL_FRACTION = 0.2
"""Share of labels that choose learning rate, epoch and method."""
DEFAULT_TEXT_TOLERANCE = 0.02
"""Validation text score a model may lose against the base: two points, about the noise of a
few hundred validation images."""
DEFAULT_WISE_FT_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FOLDER_SPLITS = ("held_out", "val", "train", "all")
