"""Generic encoding of side features (user/item frames) and event time into embedding codes.

Each usable column of a feature frame becomes one field, whatever its name:
- lists (e.g. MovieLens genres in ``tags``) -> a multi-hot field (up to `MAX_TAGS` slots,
  each weighted 1/len so the field embedding is the mean of its tags);
- numbers with more than `bins` distinct values -> quantile buckets; other numbers, strings,
  booleans -> categories.
Columns are skipped when empty, when their values are nearly unique per row (ids, titles,
URLs: more than `max_unique_share` of the rows) or when they have over `max_categories`
categories. Code 0 of every field is "unknown / missing". Codes are global (each field has an
offset), so one embedding table serves all fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: At most this many tags of a list-valued field are kept per row.
MAX_TAGS = 16


@dataclass
class FieldTable:
    """Encoded fields for one entity (user or item): ``codes`` and ``weights`` are
    ``(n_rows, n_slots)``; ``slot_field[s]`` is the field of slot s (0-based within this
    table); codes are global ids starting at `offset`."""

    codes: np.ndarray
    weights: np.ndarray
    slot_field: np.ndarray
    names: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # code 0 ("unknown") of each field
    size: int = 0  # codes used, from offset

    @property
    def n_fields(self) -> int:
        return len(self.names)


def _is_listlike(values: pd.Series) -> bool:
    sample = values.dropna()
    return len(sample) > 0 and all(
        isinstance(v, (list, tuple, np.ndarray)) for v in sample.iloc[:50]
    )


def encode_entities(
    n_rows: int,
    frame: pd.DataFrame | None,
    id_name: str,
    offset: int,
    bins: int = 10,
    max_categories: int = 1000,
    max_unique_share: float = 0.5,
) -> FieldTable:
    """Fields for entities ``0..n_rows-1``: first the entity's own id (one code per row),
    then one field per usable column of `frame` (indexed by entity index)."""
    codes = [offset + 1 + np.arange(n_rows, dtype=np.int64)[:, None]]
    weights = [np.ones((n_rows, 1), np.float32)]
    slot_field = [0]
    names = [id_name]
    offsets = [offset]
    nxt = offset + 1 + n_rows
    if frame is not None and len(frame):
        rows = frame.index.to_numpy()
        ok = (rows >= 0) & (rows < n_rows)
        frame = frame[ok]
        rows = rows[ok].astype(np.int64)
        for col in frame.columns:
            enc = _encode_column(frame[col], bins, max_categories, max_unique_share)
            if enc is None:
                continue
            local, w, vocab = enc
            c = np.zeros((n_rows, local.shape[1]), np.int64)
            ww = np.zeros((n_rows, local.shape[1]), np.float32)
            c[rows] = local
            ww[rows] = w
            missing = ww.sum(axis=1) == 0  # unknown: code 0 of the field with weight 1
            ww[missing, 0] = 1.0
            codes.append(c + nxt)
            weights.append(ww)
            slot_field += [len(names)] * local.shape[1]
            names.append(str(col))
            offsets.append(nxt)
            nxt += vocab
    return FieldTable(
        codes=np.hstack(codes),
        weights=np.hstack(weights),
        slot_field=np.asarray(slot_field, np.int64),
        names=names,
        offsets=offsets,
        size=nxt - offset,
    )


def _encode_column(
    values: pd.Series, bins: int, max_categories: int, max_unique_share: float
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(local codes ``(n, slots)`` with 0 = missing, weights, vocabulary size incl. 0), or
    None when the column carries no usable signal."""
    n = len(values)
    if n == 0 or values.isna().all():
        return None
    if _is_listlike(values):
        lists = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in values]
        vocab = pd.Index(sorted({str(t) for v in lists for t in v}))
        if len(vocab) == 0 or len(vocab) > max_categories:
            return None
        width = max(1, min(MAX_TAGS, max(len(v) for v in lists)))
        c = np.zeros((n, width), np.int64)
        w = np.zeros((n, width), np.float32)
        for r, v in enumerate(lists):  # feature tables are built once per fit
            v = [str(t) for t in v[:width]]
            if v:
                c[r, : len(v)] = vocab.get_indexer(v) + 1
                w[r, : len(v)] = 1.0 / len(v)
        return c, w, len(vocab) + 1
    present = values.notna().to_numpy()
    distinct = values[present].astype(str).nunique()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        x = values.to_numpy(dtype=np.float64)
        if distinct > bins:
            edges = np.unique(np.nanquantile(x[present], np.linspace(0, 1, bins + 1)[1:-1]))
            local = np.where(present, np.searchsorted(edges, np.nan_to_num(x), "right") + 1, 0)
            return local[:, None], present.astype(np.float32)[:, None], len(edges) + 2
    if distinct < 2 or distinct > max_categories or distinct > max_unique_share * present.sum():
        return None
    keys = values.astype(str).where(present, None)
    vocab = pd.Index(sorted(keys[present].unique()))
    local = np.where(present, vocab.get_indexer(keys.fillna("")) + 1, 0)
    return local[:, None].astype(np.int64), present.astype(np.float32)[:, None], len(vocab) + 1


#: Time context fields derived from event timestamps (UTC): name and number of values.
TIME_FIELDS = (("hour", 24), ("weekday", 7))


def time_codes(timestamp: np.ndarray | None, n: int, offset: int) -> np.ndarray:
    """``(n, 2)`` global codes of hour-of-day and weekday (code 0 of a field = unknown)."""
    out = np.zeros((n, len(TIME_FIELDS)), np.int64)
    if timestamp is not None:
        ok = ~np.isnan(timestamp)
        secs = np.nan_to_num(timestamp).astype(np.int64)
        hour = (secs // 3600) % 24
        weekday = (secs // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        out[:, 0] = np.where(ok, hour + 1, 0)
        out[:, 1] = np.where(ok, weekday + 1, 0)
    out[:, 0] += offset
    out[:, 1] += offset + TIME_FIELDS[0][1] + 1
    return out


def time_vocab() -> int:
    """Codes used by `time_codes` (each field plus its unknown code)."""
    return sum(size + 1 for _, size in TIME_FIELDS)
