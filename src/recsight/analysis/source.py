"""Where the analysis reads from: the store's tables as Ibis expressions, and how to run them.

Every section builds Ibis expressions over `AnalysisSource.events` / `.items` / `.users` and
hands them to `AnalysisSource.execute`, which returns a (small, aggregated) pandas frame. The
tables are *unbound* Ibis tables named like the store's tables, so the analytics do not depend
on DuckDB: `from_store` compiles them to DuckDB SQL and runs them on the store's own connection
(ibis 12's DuckDB backend cannot drive duckdb 2.0, whose cursors dropped `fetch_arrow_table`);
a Spark or other Ibis backend runs the same expressions through its `to_pandas`.

Each `execute` is one query, so an intermediate that several queries use (per-user funnel
times, the session table, interest profiles) would be computed from all events each time.
Inside `AnalysisSource.scope()` (the report opens one), `materialize` stores such an
intermediate once on the engine (a DuckDB temporary table, a cached Spark view) and returns an
unbound table of the same schema in its place; leaving the scope drops them. Outside a scope,
or on an engine without `keep`, `materialize` returns the expression unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import uuid
import zoneinfo
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from ibis.common.graph import Graph

from recsight.analysis.groups import GroupPolicy
from recsight.data.store import TOPICS_TABLE, Store
from recsight.errors import NeedsTimestampsError, RecsightError


class NotAvailable(RecsightError):
    """A section (or part of one) does not apply to this log, e.g. ratings without ratings."""


@dataclass
class AnalysisSource:
    """Ibis tables of one log plus the function that runs expressions over them.

    Attributes:
        events, items, users: Ibis tables with the store's schema.
        exposures: the served recommendations, when the store has any (else None).
        execute: runs an Ibis expression and returns a pandas frame.
        timezone: the declared zone for hour-of-day and day-of-week figures.
        name: a label for reports (the store path).
        privacy: the minimum group size (`recsight.analysis.groups`) and what it suppressed.
        keep: stores a table expression's rows on the engine under a name and returns the
            function that drops them (None: the engine cannot; `materialize` is then a no-op).
    """

    events: ir.Table
    items: ir.Table
    users: ir.Table
    execute: Callable[[ir.Expr], pd.DataFrame]
    exposures: ir.Table | None = None  # recommendations served (by `recsight serve`)
    #: topics derived from item text (`recsight topics`): item_idx, level, topic, label
    topics: ir.Table | None = None
    timezone: str = "UTC"
    name: str = ""
    #: the minimum group size the sections apply (off by default; `recsight analyze` sets 5)
    privacy: GroupPolicy = field(default_factory=GroupPolicy)
    keep: Callable[[str, ir.Table], Callable[[], None]] | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    #: the drop functions of the tables materialized in the open scope (None: no scope open)
    _kept: list[Callable[[], None]] | None = field(default=None, repr=False)
    #: materialized tables shared between sections, by key; cleared with the scope
    _shared: dict = field(default_factory=dict, repr=False)

    @contextlib.contextmanager
    def scope(self) -> Iterator[AnalysisSource]:
        """Within it, `materialize` stores intermediates on the engine; on leaving, they are
        dropped. Nested scopes share the outermost one."""
        if self._kept is not None:
            yield self
            return
        self._kept = []
        try:
            yield self
        finally:
            kept, self._kept = self._kept, None
            self._shared.clear()
            for drop in reversed(kept):
                drop()

    def materialize(self, expr: ir.Table) -> ir.Table:
        """`expr` computed once, as an unbound table with its schema that later queries read
        instead of recomputing it (the expression itself outside a scope)."""
        if self._kept is None or self.keep is None:
            return expr
        name = f"recsight_tmp_{uuid.uuid4().hex[:8]}_{next(_counter)}"
        self._kept.append(self.keep(name, expr))
        return ibis.table(expr.schema(), name=name)

    def shared(self, key: Hashable, build: Callable[[], ir.Table]) -> ir.Table:
        """`build()` materialized once per scope under `key`, for intermediates that several
        sections use (e.g. the session table: sessions and the bot rule)."""
        if self._kept is None or self.keep is None:
            return build()
        if key not in self._shared:
            self._shared[key] = self.materialize(build())
        return self._shared[key]

    def df(self, expr: ir.Expr) -> pd.DataFrame:
        """Run `expr` and return a frame (scalars become a one-row frame)."""
        if isinstance(expr, ir.Scalar):
            expr = expr.as_table()
        return self.execute(expr)

    def scalar(self, expr: ir.Scalar):
        return self.df(expr).iat[0, 0]

    # -- shared facts, computed once ---------------------------------------------------------
    @property
    def time_range(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """(min, max) UTC timestamp of the events, or None when there are none."""
        if "time_range" not in self._cache:
            ts = self.events.timestamp
            row = self.df(self.events.aggregate(lo=ts.min(), hi=ts.max(), n=ts.count()))
            lo, hi, n = row.iloc[0]
            self._cache["time_range"] = None if not n else (pd.Timestamp(lo), pd.Timestamp(hi))
        return self._cache["time_range"]

    @property
    def has_timestamps(self) -> bool:
        return self.time_range is not None

    def require_timestamps(self, what: str) -> None:
        if not self.has_timestamps:
            raise NeedsTimestampsError(f"{what} needs event timestamps; this log has none")

    @property
    def event_type_counts(self) -> dict[str, int]:
        if "types" not in self._cache:
            e = self.events
            d = self.df(
                e.group_by("event_type")
                .aggregate(n=e.count())
                .order_by(ibis.desc("n"), "event_type")
            )
            self._cache["types"] = dict(zip(d.event_type, d.n.astype(int), strict=True))
        return self._cache["types"]

    @property
    def has_categories(self) -> bool:
        if "has_cat" not in self._cache:
            self._cache["has_cat"] = bool(self.scalar(self.items.category.notnull().sum()) or 0)
        return self._cache["has_cat"]

    @property
    def has_topics(self) -> bool:
        """Whether topics from item text were built for this catalog."""
        if "has_topics" not in self._cache:
            t = self.topics
            self._cache["has_topics"] = t is not None and bool(
                self.scalar(t.filter(t.level == 1).count())
            )
        return self._cache["has_topics"]

    @property
    def interest_basis(self) -> str | None:
        """What the interest figures group items by: ``"category"`` when the catalog has
        categories, else ``"topic"`` when topics were built from item text, else None."""
        if self.has_categories:
            return "category"
        return "topic" if self.has_topics else None

    # -- derived expressions -----------------------------------------------------------------
    def events_with_category(
        self, events: ir.Table | None = None, basis: str | None = None
    ) -> ir.Table:
        """Events with their item's `category` ("(none)" when the item has none): the
        catalog's category, or its topic when the catalog has no categories (`basis`
        ``"topic"`` asks for topics even then)."""
        e = self.events if events is None else events
        basis = basis or self.interest_basis
        if basis == "topic" and self.topics is not None:
            t = self.topics
            cats = t.filter(t.level == 1).select("item_idx", cat=t.label)
        else:
            cats = self.items.select("item_idx", cat=self.items.category)
        j = e.left_join(cats, e.item_idx == cats.item_idx).drop("item_idx_right")
        return j.mutate(category=j.cat.fill_null("(none)")).drop("cat")

    def local_time(self, ts: ir.TimestampValue) -> ir.TimestampValue:
        """`ts` (naive UTC) shifted to the declared time zone, as naive local wall time.

        The zone's UTC offsets over the data's time span become a CASE on the UTC time, which
        every Ibis backend compiles, so local figures stay in the database.
        """
        rng = self.time_range
        if rng is None or self.timezone == "UTC":
            return ts
        changes = utc_offset_changes(self.timezone, rng[0], rng[1])
        if len(changes) == 1:
            return ts + ibis.interval(seconds=int(changes[0][1]))
        branches = [
            (ts < ibis.literal(start.to_pydatetime()), int(prev_off))
            for (start, _), (_, prev_off) in zip(changes[1:], changes[:-1], strict=True)
        ]
        offset = ibis.cases(*branches, else_=int(changes[-1][1]))
        return ts + offset.as_interval("s")


def utc_offset_changes(
    tz: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> list[tuple[pd.Timestamp, int]]:
    """The zone's UTC offset (seconds) from `lo` on, and each change up to `hi`: a list of
    (naive UTC start, offset). Found on a daily grid, then bisected to the second; zones change
    offset on whole minutes."""
    zone = zoneinfo.ZoneInfo(tz)

    def offset(t: pd.Timestamp) -> int:
        return int(t.tz_localize("UTC").astimezone(zone).utcoffset().total_seconds())

    lo = pd.Timestamp(lo).floor("D")
    hi = pd.Timestamp(hi).ceil("D")
    days = pd.date_range(lo, hi, freq="D", tz="UTC")
    local = days.tz_convert(zone)
    offs = (local.tz_localize(None) - days.tz_localize(None)).total_seconds().astype(int)
    out = [(lo, int(offs[0]))]
    for i in np.flatnonzero(np.diff(offs)):
        a, b = days[i].tz_localize(None), days[i + 1].tz_localize(None)
        while b - a > pd.Timedelta(seconds=1):
            mid = a + (b - a) / 2
            a, b = (mid, b) if offset(mid) == offs[i] else (a, mid)
        out.append((b.floor("min"), int(offs[i + 1])))
    return out


_counter = itertools.count()


def _table(store: Store, name: str) -> ir.Table:
    rows = store.con.execute(f"DESCRIBE {name}").fetchall()
    mapper = ibis.backends.sql.datatypes.DuckDBType
    schema = {r[0]: mapper.from_string(r[1], nullable=r[2] == "YES") for r in rows}
    return ibis.table(schema, name=name)


def without_id_maps(
    expr: ir.Expr, events: ir.Table, log: ir.Table, maps: dict[str, ir.Table]
) -> ir.Expr:
    """`expr` reading `log` (the events without their external ids) in place of `events`,
    joined only to the id maps (`maps`: id column -> its map table, e.g. ``"user_id"`` ->
    `user_map`) whose id its result depends on; `expr` itself when it needs both ids.

    The store's `events` view joins every event to the user and item maps (3M and 1M rows at
    100M events), and DuckDB keeps those joins even when no column of the maps is read; most
    report queries need only the integer ids. The maps are total (ingest gives every event's
    ids an index), so the join drops no event and the rows are the same. In the rewritten
    expression an id that is not joined is a NULL column that nothing reads (pruned)."""
    ev = events.op()
    live = _live_columns(expr.op())
    if ev not in live:
        return expr
    ids = [c for c in maps if c in live[ev]]
    if len(ids) == len(maps):
        return expr
    t = log
    for c in ids:
        m = maps[c]
        key = next(k for k in m.columns if k != c)  # user_idx for user_map
        t = t.inner_join(m.select(key, c), key)
    cols = {
        c: (t[c] if c in log.columns or c in ids else ibis.null(dtype))
        for c, dtype in events.schema().items()
    }
    return expr.op().replace({ev: t.select(**cols).op()}).to_expr()


def _live_columns(root: ops.Node) -> dict[ops.Relation, set[str]]:
    """The relations `root`'s result depends on, each with the columns of it that are read
    (an empty set: only its rows count). Column pruning on the Ibis graph: a relation's
    consumers (after it in topological order) are visited first and say what they read;
    a column kept by a projection that nothing downstream reads does not count. Operations
    not named here count as reading every column of their inputs."""
    need: dict[ops.Relation, set[str]] = {}

    def read(value: ops.Node) -> None:
        # the fields and relations a live value refers to, not descending into relations
        for n in value.find(ops.Node, filter=lambda n: not isinstance(n, ops.Relation)):
            if isinstance(n, ops.Relation):
                continue
            if isinstance(n, ops.Field):
                need.setdefault(n.rel, set()).add(n.name)
                continue
            for child in n.__children__:
                if isinstance(child, ops.Relation):  # a subquery, a count of rows, ...
                    cols = set() if isinstance(n, ops.CountStar) else set(child.schema.names)
                    need.setdefault(child, set()).update(cols)

    if isinstance(root, ops.Relation):
        need[root] = set(root.schema.names)
    else:
        read(root)
    graph, _ = Graph.from_bfs(root).toposort()
    for node in reversed(list(graph)):
        if not isinstance(node, ops.Relation) or node not in need:
            continue
        cols = need[node]
        if isinstance(node, ops.Project):
            for c in cols:
                read(node.values[c])
            need.setdefault(node.parent, set())
        elif isinstance(node, ops.Aggregate):  # every group key decides the rows
            metrics = [node.metrics[c] for c in cols & node.metrics.keys()]
            for v in [*node.groups.values(), *metrics]:
                read(v)
            need.setdefault(node.parent, set())
        elif isinstance(node, ops.JoinChain):  # every join decides the rows
            for c in cols:
                read(node.values[c])
            for link in node.rest:
                for p in link.predicates:
                    read(p)
            for t in node.tables:
                need.setdefault(t, set())
        elif isinstance(
            node, ops.Filter | ops.Sort | ops.Limit | ops.JoinReference | ops.DropColumns
        ):  # the parent's columns pass through; predicates and sort keys are read
            for child in node.__children__:
                if isinstance(child, ops.Relation):
                    need.setdefault(child, set()).update(cols)
                else:
                    read(child)
        else:  # distinct rows, set operations, ...: everything they touch
            for child in node.__children__:
                if isinstance(child, ops.Relation):
                    need.setdefault(child, set()).update(child.schema.names)
                else:
                    read(child)
    return need


def from_store(store: Store) -> AnalysisSource:
    """An `AnalysisSource` over a recsight store, run by its DuckDB connection (queries that
    need no external id read `event_log`: `without_id_maps`)."""
    con = store.con
    events = _table(store, "events")
    log = _table(store, "event_log")
    maps = {"user_id": _table(store, "user_map"), "item_id": _table(store, "item_map")}

    def sql(expr: ir.Expr) -> str:
        return ibis.to_sql(without_id_maps(expr, events, log, maps), dialect="duckdb")

    def execute(expr: ir.Expr) -> pd.DataFrame:
        return con.execute(sql(expr)).df()

    def keep(name: str, expr: ir.Table) -> Callable[[], None]:
        # a temporary table lives in this connection only (and also in a read-only store);
        # under the memory limit DuckDB spills it to its temp directory
        con.execute(f'CREATE TEMP TABLE "{name}" AS {sql(expr)}')
        return lambda: con.execute(f'DROP TABLE IF EXISTS temp."{name}"')

    tables = {r[0] for r in store.con.execute("SHOW TABLES").fetchall()}
    return AnalysisSource(
        events=events,
        items=_table(store, "items"),
        users=_table(store, "users"),
        exposures=_table(store, "exposures") if "exposures" in tables else None,
        topics=_table(store, TOPICS_TABLE) if TOPICS_TABLE in tables else None,
        execute=execute,
        keep=keep,
        timezone=store.timezone,
        name=str(store.path),
    )


def iso(t: pd.Timestamp | dt.datetime | None) -> str | None:
    """A naive UTC time as ISO-8601 with 'Z'."""
    return None if t is None or pd.isna(t) else pd.Timestamp(t).isoformat() + "Z"


def as_int(v) -> int:
    """An aggregate as int, 0 for NULL (e.g. the sum over no rows)."""
    return 0 if v is None or pd.isna(v) else int(v)
