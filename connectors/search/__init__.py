"""Search: the filter language (:func:`parse_filter`), its compilers, and the :class:`Searcher`."""

from ..filters import FilterSyntaxError, UnsupportedFilterError, parse_filter
from .searcher import Searcher

__all__ = ["FilterSyntaxError", "Searcher", "UnsupportedFilterError", "parse_filter"]
