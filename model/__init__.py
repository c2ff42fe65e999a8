"""Training, realignment, evaluation and export of retrieval-optimised CLIP encoders."""
