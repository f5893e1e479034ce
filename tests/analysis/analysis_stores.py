"""Helpers for the analysis tests: tiny stores built from hand-written event lists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recsight.analysis import AnalysisSource, from_store
from recsight.data.ingest import ingest
from recsight.data.store import Store

T0 = pd.Timestamp("2024-01-01 00:00:00")  # a Monday


def build_store(
    folder: Path,
    events: list[tuple],
    items: dict[str, str] | None = None,
    tz: str = "UTC",
    columns: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event_type", "value"),
) -> Store:
    """A store from rows of `columns`; a numeric timestamp is seconds after `T0` (UTC)."""
    df = pd.DataFrame(events, columns=list(columns[: len(events[0])]))
    if "timestamp" in df:
        df["timestamp"] = (T0 + pd.to_timedelta(df.timestamp, unit="s")).dt.tz_localize("UTC")
    if "value" in df:
        df["value"] = df.value.astype(float)
    ev = folder / "events.parquet"
    df.to_parquet(ev)
    it = None
    if items:
        it = folder / "items.parquet"
        pd.DataFrame({"item_id": list(items), "category": list(items.values())}).to_parquet(it)
    store = Store(folder / "t.duckdb")
    ingest(store, ev, items=it, tz=tz, dedupe="none")
    return store


@pytest.fixture
def make_source(tmp_path) -> Callable[..., AnalysisSource]:
    """`make_source(events, items=None, tz="UTC")` -> an AnalysisSource over a fresh store."""
    stores: list[Store] = []

    def make(events, items=None, tz="UTC", **kw) -> AnalysisSource:
        sub = tmp_path / f"s{len(stores)}"
        sub.mkdir()
        stores.append(build_store(sub, events, items, tz, **kw))
        return from_store(stores[-1])

    yield make
    for s in stores:
        s.close()
