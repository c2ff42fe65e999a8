"""What payload fields a collection has, from a sample of its points: for warnings and facets.

Stores do not list the payload fields their points carry (only some record their payload
indexes), so the fields are read from the first :data:`FIELD_SAMPLE` points. That is enough to
tell a misspelt filter field (``lable``) from one that only matches nothing, and to offer the
labels people filter by as facets: text fields whose values repeat (few distinct values, such
as ``label`` or ``camera_model``), never the path or per-image fields; and the year a photo was
taken (``taken_at``, Unix seconds: years in UTC), whose filter is a date range. Each facet value
carries the filter that selects it, so the page writes exactly that into its filter box. Facet
counts are counts in the sample, named as such.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..filters import Filter, filter_fields

#: points whose payloads are read
FIELD_SAMPLE = 200
#: a text field with more distinct values than this in the sample is no facet (a caption, a path)
MAX_FACET_VALUES = 30
#: facets offered, the fields with the fewest distinct values first
MAX_FACETS = 8
#: fields never offered as facets (the file itself, bookkeeping of ingestion and review, the
#: camera's clock text: ``taken_at`` gives the year)
NOT_FACETS = frozenset({"path", "sha256", "source", "duplicate_review", "taken_at_local"})
#: the payload field of when a photo was taken (Unix seconds), offered as a facet by year
DATE_FIELD = "taken_at"
#: the Unix seconds a year facet is made for (years 1 to 9998: the next year's bound must be a date)
MIN_TIME, MAX_TIME = -62135596800, 253370764800


@dataclass
class FieldSample:
    """Payload fields of ``sampled`` points: each field's name and its text values' counts."""

    sampled: int = 0
    names: set[str] = field(default_factory=set)
    text_values: dict[str, Counter] = field(default_factory=dict)
    non_text: set[str] = field(default_factory=set)
    years: Counter = field(default_factory=Counter)

    def unknown(self, filter: Filter) -> list[str]:
        """Fields that ``filter`` names and no sampled point has (empty when nothing was sampled)."""
        return sorted(filter_fields(filter) - self.names) if self.sampled else []

    def warning(self, filter: Filter) -> str | None:
        """A sentence on the filter's unknown fields, or None."""
        unknown = self.unknown(filter)
        if not unknown:
            return None
        return (f"the filter names field(s) {', '.join(unknown)} that none of {self.sampled} sampled items has "
                f"(fields: {', '.join(sorted(self.names))})")

    def facets(self) -> dict[str, list[dict[str, Any]]]:
        """``{field: [{"value", "count", "filter"}, ...]}``: text fields whose sampled values
        repeat, most frequent value first, then the years of ``taken_at``, newest first."""
        chosen = []
        for name, counts in self.text_values.items():
            if name in NOT_FACETS or name in self.non_text or len(counts) > MAX_FACET_VALUES:
                continue
            if sum(counts.values()) > len(counts):  # some value repeats: a label, not a per-image value
                chosen.append((len(counts), name))
        facets = {name: [{"value": value, "count": count, "filter": f"{name} = {json.dumps(value, ensure_ascii=False)}"}
                         for value, count in self.text_values[name].most_common()]
                  for _, name in sorted(chosen)[:MAX_FACETS]}
        if self.years:
            facets[DATE_FIELD] = [{"value": str(year), "count": count,
                                   "filter": f"{DATE_FIELD} >= {year:04d}-01-01 and {DATE_FIELD} < {year + 1:04d}-01-01"}
                                  for year, count in sorted(self.years.items(), reverse=True)]
        return facets


def sample_fields(points: Iterable[Any], limit: int = FIELD_SAMPLE) -> FieldSample:
    """The :class:`FieldSample` of the first ``limit`` of ``points`` (a store's ``scroll()``)."""
    sample = FieldSample()
    for point in itertools.islice(points, limit):
        sample.sampled += 1
        for name, value in point.payload.items():
            sample.names.add(name)
            if isinstance(value, str):
                sample.text_values.setdefault(name, Counter())[value] += 1
            elif value is not None:
                sample.non_text.add(name)
            if name == DATE_FIELD and isinstance(value, (int, float)) and math.isfinite(value):
                year = datetime.fromtimestamp(value, timezone.utc).year if MIN_TIME <= value < MAX_TIME else None
                if year is not None:
                    sample.years[year] += 1
    return sample


__all__ = ["DATE_FIELD", "FIELD_SAMPLE", "FieldSample", "MAX_FACETS", "MAX_FACET_VALUES", "sample_fields"]
