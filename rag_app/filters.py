"""Metadata filters, applied to every retriever *before* fusion.

A `Filter` is a conjunction of conditions on chunk metadata: equality (`department=Stores`),
membership (`doc_type=manual,bulletin`), inequality (`access!=restricted`) and ranges on
dates or numbers (`effective_date>=2025-01-01`, `revision<3`). The same filter is evaluated
two ways that must agree:

- in Python over chunk metadata (`Filter.matches`), giving BM25 its allowed ids;
- as a Chroma `where` clause (`Filter.to_chroma`), so the vector search never returns a
  chunk the filter excludes.

Chroma compares only numbers with `$gt`/`$gte`/..., so `chroma_metadata` stores every field
as a normalised string (for equality) plus a numeric shadow field for dates
(`<key>__date` = YYYYMMDD) and numbers (`<key>__num`). Equality is exact and case-sensitive
on the normalised text (booleans are `true`/`false`, whole floats drop their `.0`).

Example:
    >>> flt = parse_filter(["department=Stores", "effective_date>=2025-01-01"])
    >>> flt.matches({"department": "Stores", "effective_date": "2025-03-01"})
    True
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from rag_app.errors import RagAppError
from rag_app.types import Chunk

Op = Literal["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte"]
_RANGE_OPS = {"gt", "gte", "lt", "lte"}
_SYMBOL_OP = {">=": "gte", "<=": "lte", "!=": "ne", "=": "eq", ">": "gt", "<": "lt"}
_SPEC = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ].*)?)?)?$")
DATE_SUFFIX = "__date"
NUM_SUFFIX = "__num"


class FilterError(RagAppError, ValueError):
    """A filter spec that cannot be parsed or evaluated."""


def normalise(value: Any) -> str:
    """The text form used for equality, identical in Python and in Chroma."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def date_ordinal(value: Any, *, end: bool = False) -> int | None:
    """YYYYMMDD of a date-like value ('2025', '2025-03', '2025-03-01T10:00'), else None.

    Partial dates expand to their first day, or to their last day when `end` (so that
    `date<=2025` includes all of 2025). A bare integer year (1000-9999) counts as a date.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value) if 1000 <= value <= 9999 else ""
    if isinstance(value, date):
        value = value.isoformat()
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month_s, day_s = match.groups()
    month = int(month_s) if month_s else (12 if end else 1)
    if day_s:
        day = int(day_s)
    elif end:
        day = calendar.monthrange(int(year), month)[1] if 1 <= month <= 12 else 0
    else:
        day = 1
    try:
        date(int(year), month, day)
    except ValueError:
        return None
    return int(year) * 10000 + month * 100 + day


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Condition:
    """One test on one metadata key. `value` is a string, or a tuple of them for in/nin."""

    key: str
    op: Op
    value: str | tuple[str, ...]

    def matches(self, fields: Mapping[str, Any]) -> bool:
        if self.key not in fields:
            return self.op in ("ne", "nin")
        actual = fields[self.key]
        if self.op in _RANGE_OPS:
            left, right = self._range_operands(actual)
            if left is None or right is None:
                return False
            return {
                "gt": left > right,
                "gte": left >= right,
                "lt": left < right,
                "lte": left <= right,
            }[self.op]
        text = normalise(actual)
        if self.op == "eq":
            return text == self.value
        if self.op == "ne":
            return text != self.value
        if self.op == "in":
            return text in self.value
        return text not in self.value  # nin

    def _range_operands(self, actual: Any) -> tuple[float | None, float | None]:
        bound = str(self.value)
        ordinal = date_ordinal(bound, end=self.op == "lte" or self.op == "gt")
        if ordinal is not None:
            return date_ordinal(actual), ordinal
        return _number(actual), _number(bound)

    def to_chroma(self) -> dict[str, Any]:
        if self.op in _RANGE_OPS:
            bound = str(self.value)
            ordinal = date_ordinal(bound, end=self.op == "lte" or self.op == "gt")
            if ordinal is not None:
                return {self.key + DATE_SUFFIX: {"$" + self.op: ordinal}}
            return {self.key + NUM_SUFFIX: {"$" + self.op: _number(bound)}}
        if self.op in ("in", "nin"):
            return {self.key: {"$" + self.op: list(self.value)}}
        return {self.key: {"$" + self.op: self.value}}

    def __str__(self) -> str:
        symbol = {v: k for k, v in _SYMBOL_OP.items()}
        if self.op in ("in", "nin"):
            return f"{self.key}{'=' if self.op == 'in' else '!='}{','.join(self.value)}"
        return f"{self.key}{symbol[self.op]}{self.value}"


@dataclass(frozen=True)
class Filter:
    """All conditions must hold (AND). An empty filter matches everything."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def __str__(self) -> str:
        return " AND ".join(str(c) for c in self.conditions) or "(no filter)"

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return all(c.matches(fields) for c in self.conditions)

    def matches_chunk(self, chunk: Chunk) -> bool:
        return self.matches(chunk_fields(chunk))

    def to_chroma(self) -> dict[str, Any] | None:
        """The Chroma `where` clause, or None for an empty filter."""
        clauses = [c.to_chroma() for c in self.conditions]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def and_(self, other: Filter | None) -> Filter:
        """Both filters at once (e.g. a user's filter AND their access rights)."""
        if not other:
            return self
        return Filter(self.conditions + other.conditions)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filter:
        """`{"department": "Stores", "doc_type": ["manual", "bulletin"]}` -> eq / in."""
        conditions = []
        for key, value in data.items():
            _check_key(key)
            if isinstance(value, list | tuple | set | frozenset):
                values = tuple(sorted(normalise(v) for v in value))
                if not values:
                    raise FilterError(f"filter on {key!r} has an empty list of values")
                conditions.append(Condition(key, "in", values))
            else:
                conditions.append(Condition(key, "eq", normalise(value)))
        return cls(tuple(conditions))


def parse_filter(specs: Iterable[str] | str | None) -> Filter | None:
    """`["key=value", "key=a,b", "key!=v", "effective_date>=2025-01-01"]` -> Filter.

    Returns None when there are no specs. A comma in an `=` / `!=` value means "any of".
    Range operators need a date (YYYY, YYYY-MM, YYYY-MM-DD) or a number.
    """
    if specs is None:
        return None
    if isinstance(specs, str):
        specs = [specs]
    conditions: list[Condition] = []
    for spec in specs:
        if not spec or not spec.strip():
            continue
        match = _SPEC.match(spec)
        if not match:
            raise FilterError(
                f"cannot parse filter {spec!r}; use key=value, key=a,b, key!=value, "
                "or key>=2025-01-01 (also >, <, <=)"
            )
        key, symbol, raw = match.groups()
        _check_key(key)
        if raw == "":
            raise FilterError(f"filter {spec!r} has no value")
        op: Op = _SYMBOL_OP[symbol]  # type: ignore[assignment]
        if op in _RANGE_OPS:
            if date_ordinal(raw) is None and _number(raw) is None:
                raise FilterError(
                    f"filter {spec!r}: {symbol} needs a date (YYYY-MM-DD) or a number"
                )
            conditions.append(Condition(key, op, raw))
        elif "," in raw:
            values = tuple(sorted({v.strip() for v in raw.split(",") if v.strip()}))
            conditions.append(Condition(key, "in" if op == "eq" else "nin", values))
        else:
            conditions.append(Condition(key, op, raw))
    return Filter(tuple(conditions)) if conditions else None


def _check_key(key: str) -> None:
    if not key or key.startswith(("$", "#")) or key.endswith((DATE_SUFFIX, NUM_SUFFIX)):
        raise FilterError(f"invalid filter key {key!r}")


# --- the fields a chunk can be filtered on ---------------------------------------------------
def chunk_fields(chunk: Chunk) -> dict[str, Any]:
    """Scalar metadata of a chunk plus its doc_id and title: what filters see."""
    fields: dict[str, Any] = {
        k: v
        for k, v in chunk.metadata.items()
        if isinstance(v, str | int | float | bool) and not k.startswith(("$", "#"))
    }
    fields["doc_id"] = chunk.doc_id
    if chunk.title:
        fields.setdefault("title", chunk.title)
    return fields


def chroma_metadata(chunk: Chunk) -> dict[str, str | int | float | bool]:
    """What Chroma stores per vector so that `Filter.to_chroma` means what `matches` means."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in chunk_fields(chunk).items():
        if key.endswith((DATE_SUFFIX, NUM_SUFFIX)):
            continue
        out[key] = normalise(value)
        ordinal = date_ordinal(value)
        if ordinal is not None:
            out[key + DATE_SUFFIX] = ordinal
        number = _number(value)
        if number is not None:
            out[key + NUM_SUFFIX] = number
    return out


def filter_values(chunks: Iterable[Chunk], keys: Iterable[str]) -> dict[str, list[str]]:
    """Distinct values per key (for filter widgets): only keys present in some chunk."""
    wanted = list(keys)
    seen: dict[str, set[str]] = {k: set() for k in wanted}
    for chunk in chunks:
        fields = chunk_fields(chunk)
        for key in wanted:
            if key in fields:
                seen[key].add(normalise(fields[key]))
    return {k: sorted(v) for k, v in seen.items() if v}
