"""Section 8, interests: per-user category profiles with exponential time decay, their entropy
(diversity), interest drift between a user's early and recent halves, item-item association
(co-occurrence with lift over each user's recent items) and category transitions.

"Category" is the catalog's category when it has them, else the item's topic from its text
(`recsight topics`); `Interests.basis` says which. Topics built for a catalog that has
categories are shown beside them (`top_topics`), never instead."""

from __future__ import annotations

import math

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel

from recsight.analysis.groups import large_groups
from recsight.analysis.overview import Quantiles, count_quantiles
from recsight.analysis.source import AnalysisSource, NotAvailable, as_int
from recsight.data.dataset import DEFAULT_WEIGHTS

HALF_LIFE_DAYS = 30.0
#: Each user's most recent distinct items that enter the co-occurrence count: caps the pairs
#: per user at cap*(cap-1)/2, so heavy users cannot make association quadratic.
RECENT_ITEMS_CAP = 20
MIN_SUPPORT = 3
DRIFT_MIN_EVENTS = 10
TOP_TRANSITION_CATEGORIES = 12


class CategoryShare(BaseModel):
    category: str
    share: float


class ItemPair(BaseModel):
    item_a: str
    item_b: str
    title_a: str | None
    title_b: str | None
    users: int  # users with both in their recent window
    lift: float


class DriftExample(BaseModel):
    user_id: str
    drift: float
    early_top: str
    recent_top: str


class Interests(BaseModel):
    basis: str = "category"  # what "category" means below: "category" or "topic" (from text)
    half_life_days: float
    n_categories: int
    top_categories: list[CategoryShare]  # decayed weight share over all users
    entropy: Quantiles  # per-user entropy of the category profile, nats
    normalized_entropy: Quantiles  # entropy / ln(number of categories)
    drift_users: int  # users with at least DRIFT_MIN_EVENTS events
    drift: Quantiles | None  # total variation distance, early vs recent half
    top_drifters: list[DriftExample]
    recent_items_cap: int
    associations: list[ItemPair]
    transition_categories: list[str]  # row/column labels; the last may be "(other)"
    transitions: list[list[int]]  # [from][to] counts between consecutive different items
    self_transition_share: float | None
    top_topics: list[CategoryShare] | None = None  # beside real categories, when built


class CategoryEvents(BaseModel):
    category: str
    events: int
    users: int


class CategoryCounts(BaseModel):
    """Events and users per category (or topic from item text: `basis`), most events first."""

    basis: str | None  # "category", "topic", or None when the catalog has neither
    rows: list[CategoryEvents]


def category_counts(src: AnalysisSource, top_k: int = 10) -> CategoryCounts:
    """The catalog's categories by events, or its topics when it has no categories (groups of
    fewer users than the minimum group size left out)."""
    basis = src.interest_basis
    if basis is None:
        return CategoryCounts(basis=None, rows=[])
    ec = src.events_with_category()
    g = ec.group_by("category").aggregate(events=ec.count(), users=ec.user_idx.nunique())
    g = large_groups(src, g.filter(g.category != "(none)"), "users", "categories")
    d = src.df(g.order_by(ibis.desc("events"), "category").limit(top_k))
    return CategoryCounts(
        basis=basis,
        rows=[
            CategoryEvents(category=str(r.category), events=int(r.events), users=int(r.users))
            for r in d.itertuples()
        ],
    )


def event_weight(e: ir.Table) -> ir.FloatingValue:
    """The default event-type weights of the data layer (rating: its value; unknown: 1)."""
    cases = []
    for name, w in DEFAULT_WEIGHTS.items():
        val = e.value.fill_null(1.0) if w == "value" else ibis.literal(float(w))
        cases.append((e.event_type == name, val))
    return ibis.cases(*cases, else_=ibis.literal(1.0))


def decayed(
    src: AnalysisSource, events: ir.Table, half_life_days: float = HALF_LIFE_DAYS
) -> ir.Table:
    """Events with `w`: type weight x 2^(-age / half-life), age up to the log's last event."""
    w = event_weight(events)
    rng = src.time_range
    if rng is None:
        return events.mutate(w=w)
    end = rng[1].timestamp()
    age_days = (ibis.literal(end) - events.timestamp.epoch_seconds()) / 86400.0
    factor = (age_days.fill_null(0.0) * (-math.log(2) / half_life_days)).exp()
    return events.mutate(w=w * factor)


def category_profiles(
    src: AnalysisSource,
    events: ir.Table | None = None,
    half_life_days: float = HALF_LIFE_DAYS,
    basis: str | None = None,
) -> ir.Table:
    """(user_idx, category, weight, share): each user's decayed category distribution (of
    topics with `basis` ``"topic"``; by default the source's `interest_basis`). Over all
    events, it is computed once per report and shared by the interests and segments."""

    def build() -> ir.Table:
        ec = decayed(src, src.events_with_category(events, basis), half_life_days)
        g = ec.group_by("user_idx", "category").aggregate(weight=ec.w.sum())
        total = g.weight.sum().over(ibis.window(group_by=g.user_idx))
        return g.mutate(share=g.weight / total)

    if events is not None:
        return build()
    key = ("category_profiles", float(half_life_days), basis or src.interest_basis)
    return src.shared(key, build)


def interests(
    src: AnalysisSource,
    half_life_days: float = HALF_LIFE_DAYS,
    recent_items_cap: int = RECENT_ITEMS_CAP,
    min_support: int = MIN_SUPPORT,
    top_k: int = 20,
) -> Interests:
    """Interest profiles, diversity, drift, item associations and category transitions."""
    basis = src.interest_basis
    if basis is None:
        raise NotAvailable(
            "interests need item categories or topics from item text (`recsight topics`); "
            "the catalog has neither"
        )
    prof = category_profiles(src, half_life_days=half_life_days)
    n_cat = int(src.scalar(prof.category.nunique()))
    top_categories = _global_shares(src, prof, top_k, "interests.top_categories")
    top_topics = None
    if basis == "category" and src.has_topics:
        topic_prof = category_profiles(src, half_life_days=half_life_days, basis="topic")
        top_topics = _global_shares(src, topic_prof, top_k, "interests.top_topics")
    ent = prof.group_by("user_idx").aggregate(h=-(prof.share * prof.share.ln()).sum())
    ent = src.materialize(ent.mutate(h=ent.h.abs(), hn=ent.h.abs() / max(math.log(n_cat), 1e-12)))
    n_drift, drift_q, drifters = _drift(src, top_k=5)
    pairs = _associations(src, recent_items_cap, min_support, top_k)
    labels, matrix, self_share = _transitions(src)
    return Interests(
        basis=basis,
        half_life_days=half_life_days,
        n_categories=n_cat,
        top_categories=top_categories,
        top_topics=top_topics,
        entropy=count_quantiles(src, ent, "h"),
        normalized_entropy=count_quantiles(src, ent, "hn"),
        drift_users=n_drift,
        drift=drift_q,
        top_drifters=drifters,
        recent_items_cap=recent_items_cap,
        associations=pairs,
        transition_categories=labels,
        transitions=matrix,
        self_transition_share=self_share,
    )


def _global_shares(
    src: AnalysisSource, prof: ir.Table, top_k: int, place: str
) -> list[CategoryShare]:
    """The categories of most decayed weight over all users, with their share of the whole
    (shares stay of the whole, rows shown or not)."""
    glob = prof.group_by("category").aggregate(w=prof.weight.sum(), users=prof.user_idx.nunique())
    gtot = float(src.scalar(glob.w.sum()))
    shown = large_groups(src, glob, "users", place)
    gd = src.df(shown.order_by(ibis.desc("w"), "category").limit(top_k))
    return [
        CategoryShare(category=str(c), share=round(float(w) / gtot, 6))
        for c, w in zip(gd.category, gd.w, strict=True)
    ]


def _ordered(src: AnalysisSource, t: ir.Table) -> list:
    return [t.timestamp, t.seq] if src.has_timestamps else [t.seq]


def drift_table(src: AnalysisSource, events: ir.Table | None = None) -> ir.Table:
    """(user_idx, drift, early_top, recent_top) for users with >= DRIFT_MIN_EVENTS events:
    total variation distance between the category distributions of the first and second half
    of the user's events (in time order), weighted by event type."""
    e = src.events if events is None else events
    # the windows order integer columns only; categories are joined to the events they keep
    e = e.select("user_idx", "item_idx", "timestamp", "seq", w=event_weight(e))
    win = ibis.window(group_by=e.user_idx, order_by=_ordered(src, e))
    e = e.mutate(rn=ibis.row_number().over(win), n=e.count().over(ibis.window(group_by=e.user_idx)))
    ec = src.events_with_category(e.filter(e.n >= DRIFT_MIN_EVENTS))
    early = ec.rn < ec.n / 2
    g = ec.group_by("user_idx", "category").aggregate(
        a=ibis.ifelse(early, ec.w, 0.0).sum(), b=ibis.ifelse(early, 0.0, ec.w).sum()
    )
    uw = ibis.window(group_by=g.user_idx)
    g = g.mutate(pa=g.a / g.a.sum().over(uw), pb=g.b / g.b.sum().over(uw))
    d = g.group_by("user_idx").aggregate(drift=0.5 * (g.pa - g.pb).abs().sum())
    early_top = _top_category(g, "pa", "early_top")
    recent_top = _top_category(g, "pb", "recent_top")
    return d.inner_join(early_top, "user_idx").inner_join(recent_top, "user_idx")


def _top_category(g: ir.Table, share: str, name: str) -> ir.Table:
    """(user_idx, name): each user's category of largest `share`, equal shares by category
    name (argmax leaves ties to the engine, so DuckDB and Spark could pick differently)."""
    w = ibis.window(group_by=g.user_idx, order_by=[ibis.desc(g[share]), g.category])
    r = g.mutate(_rk=ibis.row_number().over(w))
    return r.filter(r._rk == 0).select("user_idx", **{name: r.category})


def _drift(src: AnalysisSource, top_k: int) -> tuple[int, Quantiles | None, list[DriftExample]]:
    d = src.materialize(drift_table(src))
    n = int(src.scalar(d.count()))
    if not n:
        return 0, None, []
    if not src.privacy.examples_allowed:  # each example is one user
        src.privacy.note("interests.drift_examples", min(n, top_k))
        return n, count_quantiles(src, d, "drift"), []
    ids = src.events.select("user_idx", "user_id").distinct()
    top = src.df(
        d.order_by(ibis.desc("drift"), "user_idx").limit(top_k).inner_join(ids, "user_idx")
    )
    top = top.sort_values(["drift", "user_idx"], ascending=[False, True])
    return (
        n,
        count_quantiles(src, d, "drift"),
        [
            DriftExample(
                user_id=str(r.user_id),
                drift=round(float(r.drift), 6),
                early_top=str(r.early_top),
                recent_top=str(r.recent_top),
            )
            for r in top.itertuples()
        ],
    )


def recent_items(src: AnalysisSource, cap: int = RECENT_ITEMS_CAP) -> ir.Table:
    """(user_idx, item_idx): each user's `cap` most recently touched distinct items."""
    e = src.events
    last = e.group_by("user_idx", "item_idx").aggregate(
        t=e.timestamp.max() if src.has_timestamps else e.seq.max().cast("float64"), s=e.seq.max()
    )
    w = ibis.window(group_by=last.user_idx, order_by=[ibis.desc(last.t), ibis.desc(last.s)])
    r = last.mutate(rk=ibis.row_number().over(w))
    return r.filter(r.rk < cap).select("user_idx", "item_idx")


def _associations(src: AnalysisSource, cap: int, min_support: int, top_k: int) -> list[ItemPair]:
    """Item pairs with the highest lift n_ab * N / (n_a * n_b), counted over users' recent
    windows, among pairs seen by at least `min_support` users."""
    r = src.materialize(recent_items(src, cap))
    n_users = int(src.scalar(r.user_idx.nunique()))
    a = r.rename(ia="item_idx")
    b = r.rename(ib="item_idx")
    pairs = a.inner_join(b, [a.user_idx == b.user_idx, a.ia < b.ib])
    co = pairs.group_by("ia", "ib").aggregate(n=pairs.count()).filter(lambda t: t.n >= min_support)
    co = large_groups(src, co, "n", "interests.item_pairs")  # n: users who had both items
    deg = r.group_by("item_idx").aggregate(d=r.count())
    da = deg.rename(ia="item_idx", da="d")
    db = deg.rename(ib="item_idx", db="d")
    j = co.inner_join(da, "ia").inner_join(db, "ib")
    lift = j.n.cast("float64") * n_users / (j.da.cast("float64") * j.db)
    top = j.mutate(lift=lift).order_by(ibis.desc("lift"), ibis.desc("n"), "ia", "ib").limit(top_k)
    it = src.items.select("item_idx", "item_id", "title")
    ta = it.rename(ida="item_id", tla="title", ia="item_idx")
    tb = it.rename(idb="item_id", tlb="title", ib="item_idx")
    d = src.df(top.left_join(ta, "ia").left_join(tb, "ib"))
    d = d.sort_values(["lift", "n", "ia", "ib"], ascending=[False, False, True, True])
    return [
        ItemPair(
            item_a=str(x.ida),
            item_b=str(x.idb),
            title_a=None if pd.isna(x.tla) else str(x.tla),
            title_b=None if pd.isna(x.tlb) else str(x.tlb),
            users=int(x.n),
            lift=round(float(x.lift), 4),
        )
        for x in d.itertuples()
    ]


def _transitions(src: AnalysisSource) -> tuple[list[str], list[list[int]], float | None]:
    """Counts of category -> category between a user's consecutive events on different items."""
    # the window orders integer columns only; both items' categories are joined to the
    # transitions it leaves (a sort of every event carrying its category string cost 4x more)
    e = src.events.select("user_idx", "item_idx", "timestamp", "seq")
    w = ibis.window(group_by=e.user_idx, order_by=_ordered(src, e))
    t = e.mutate(pi=e.item_idx.lag().over(w))
    t = t.filter(t.pi.notnull() & (t.pi != t.item_idx)).select("user_idx", "item_idx", "pi")
    t = src.events_with_category(t).select("user_idx", "pi", cat_b="category")
    t = src.events_with_category(t.rename(item_idx="pi"))
    cells = t.group_by(a=t.category, b=t.cat_b).aggregate(n=t.count(), users=t.user_idx.nunique())
    d = src.df(large_groups(src, cells, "users", "interests.transitions"))
    if d.empty:
        return [], [], None
    totals = d.groupby("a").n.sum().add(d.groupby("b").n.sum(), fill_value=0)
    top = list(totals.sort_values(ascending=False).index[:TOP_TRANSITION_CATEGORIES])
    labels = [str(c) for c in top]
    other = len(totals) > len(top)
    if other:
        labels.append("(other)")
    pos = {c: i for i, c in enumerate(top)}
    size = len(labels)
    m = [[0] * size for _ in range(size)]
    for a, b, n in zip(d.a, d.b, d.n, strict=True):
        m[pos.get(a, size - 1)][pos.get(b, size - 1)] += int(n)
    same = as_int(d.loc[d.a == d.b, "n"].sum())
    return labels, m, same / as_int(d.n.sum())
