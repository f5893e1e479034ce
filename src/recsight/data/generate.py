"""Synthetic e-commerce shop logs with a known latent structure.

`generate_shop` writes a folder snapshot (``events.parquet``, ``items.parquet``,
``users.parquet``) plus ``users_truth.parquet`` with the hidden taste cluster and bot flag of
every user, so that segmentation, bot detection and recommenders can be tested against truth.

The generative story, per user: a taste cluster (a sparse preference over categories) mixed
with personal noise, a start day, a heavy-tailed activity level and a lifetime after which the
user churns. Sessions fall on active days at evening-peaked hours; each session has a focus
category and a geometric number of views of Zipf-popular items, with a click -> cart ->
purchase -> rating funnel whose rates depend on the user's affinity, the item's quality and
its price. Some users' taste drifts toward a second cluster over their lifetime, and ~0.3% of
users are bots that view hundreds of random items a few seconds apart.

Everything is vectorized per chunk of users, and events are streamed to Parquet chunk by chunk,
so memory depends on `chunk_users`, not on `n_users`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsight.data.schema import EVENT_TYPES

#: Mean events per user at the default rates and ``n_days=60`` (measured on 25k users). Pick
#: ``n_users ~= target_events / AVG_EVENTS_PER_USER``; fewer days give fewer events per user.
AVG_EVENTS_PER_USER = 34.0

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 24 * _MS_PER_HOUR
_VIEW, _CLICK, _CART, _FAV, _PURCHASE, _RATING = (
    EVENT_TYPES.index(t) for t in ("view", "click", "cart", "fav", "purchase", "rating")
)

# Session-start weights by hour of day (UTC): quiet nights, a lunch bump, an evening peak.
_HOUR_WEIGHTS = np.array(
    [0.9, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 1.8, 2.0, 2.1, 2.3,
     2.6, 2.5, 2.3, 2.3, 2.5, 2.9, 3.4, 4.0, 4.4, 4.2, 3.2, 1.8]
)  # fmt: skip
_REGIONS = ("US-East", "US-West", "US-Central", "UK", "DE", "FR", "ES", "IT", "NL", "PL",
            "SE", "CA", "AU", "JP", "BR")  # fmt: skip
_REGION_WEIGHTS = np.array([14, 12, 9, 10, 9, 7, 5, 5, 3, 3, 2, 6, 4, 5, 6], dtype=float)


@dataclass(frozen=True)
class _Category:
    """Per-category word lists and price distribution (log-normal around `median_price`);
    the table lives in ``catalog.json`` beside this module."""

    name: str
    median_price: float
    price_sigma: float
    brands: tuple[str, ...]  # for titled media (books, music, ...) these are genres
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    features: tuple[str, ...]
    uses: tuple[str, ...]
    name_words: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def _load_categories() -> tuple[_Category, ...]:
    """The category table, from the package data file ``catalog.json``. The most common
    categories come first: small catalogs use a prefix of the table."""
    text = resources.files("recsight.data").joinpath("catalog.json").read_text("utf-8")
    return tuple(
        _Category(
            name=c["name"],
            median_price=c["median_price"],
            price_sigma=c["price_sigma"],
            brands=tuple(c["brands"]),
            adjectives=tuple(c["adjectives"]),
            nouns=tuple(c["nouns"]),
            features=tuple(c["features"]),
            uses=tuple(c["uses"]),
            name_words=tuple(map(tuple, c["name_words"])) if "name_words" in c else None,
        )
        for c in json.loads(text)["categories"]
    )


_CATEGORIES: tuple[_Category, ...] = _load_categories()


@dataclass
class ShopSummary:
    """What `generate_shop` wrote: sizes, the path of each file and the count per event type."""

    out_dir: Path
    n_events: int
    n_users: int
    n_items: int
    files: dict[str, str]
    event_counts: dict[str, int]


@dataclass
class _Chunk:
    """One chunk's users and its events as arrays, sorted by (user, time)."""

    users: pa.Table
    truth: pa.Table
    session_ids: pa.Array  # per session of the chunk
    user: np.ndarray  # per event: user index within the chunk
    session: np.ndarray  # per event: index into session_ids
    item: np.ndarray
    ts: np.ndarray
    code: np.ndarray  # index into EVENT_TYPES
    value: np.ndarray  # NaN where null


@dataclass
class _World:
    """Seed-level latent structure shared by all chunks (depends on seed and n_items only)."""

    item_ids: pa.Array
    item_cat: np.ndarray  # category index per item
    item_quality: np.ndarray  # latent quality, N(0, 1): drives conversion and ratings
    item_price_rel: np.ndarray  # log(price / category median): pricier items convert less
    by_cat: np.ndarray  # item indices ordered by category
    cat_cdf: np.ndarray  # category k + within-category popularity CDF, aligned with by_cat
    cluster_pref: np.ndarray  # (K, C) preference over categories per taste cluster
    cluster_weight: np.ndarray  # (K,) share of users per cluster
    cluster_age: np.ndarray  # (K,) mean age per cluster
    cluster_gender: np.ndarray  # (K, 3) probabilities of F, M, X per cluster


def _n_categories(n_items: int) -> int:
    return int(min(n_items, np.clip(round(np.sqrt(n_items)), 8, len(_CATEGORIES))))


def _build_world(
    rng: np.random.Generator, n_items: int, titles_in: str = "en"
) -> tuple[_World, pa.Table]:
    """Draw the catalog, item popularity/quality and the taste clusters; return the items table."""
    n_cat = _n_categories(n_items)
    cats = _CATEGORIES[:n_cat]
    # Every category gets one item, the rest are spread unevenly across categories.
    share = rng.dirichlet(np.full(n_cat, 3.0))
    item_cat = np.concatenate([np.arange(n_cat), rng.choice(n_cat, n_items - n_cat, p=share)])
    item_cat = rng.permutation(item_cat)

    # Zipf popularity within each category, in a random rank order (item id says nothing).
    by_cat = np.argsort(item_cat, kind="stable")
    cat_of_pos = item_cat[by_cat]
    sizes = np.bincount(item_cat, minlength=n_cat)
    first = _group_offsets(sizes)
    rank = np.arange(n_items) - np.repeat(first, sizes)
    rank = rank[np.lexsort((rng.random(n_items), cat_of_pos))] + 1  # shuffled within category
    weight = rank.astype(float) ** -1.35
    csum = np.cumsum(weight)
    start_sum = np.repeat(csum[first] - weight[first], sizes)
    total = np.repeat(csum[first + sizes - 1], sizes) - start_sum
    cat_cdf = cat_of_pos + (csum - start_sum) / total
    cat_cdf[first + sizes - 1] = np.arange(n_cat) + 1.0  # exact upper edge per category

    quality = rng.standard_normal(n_items)
    medians = np.array([c.median_price for c in cats])
    sigmas = np.array([c.price_sigma for c in cats])
    log_rel = rng.standard_normal(n_items) * sigmas[item_cat]
    price = np.round(medians[item_cat] * np.exp(log_rel), 2).clip(0.99)

    titles, descriptions = _item_texts(rng, cats, item_cat, titles_in)
    item_ids = pc.binary_join_element_wise(
        "i", pc.cast(pa.array(np.arange(n_items)), pa.string()), ""
    )
    items = pa.table(
        {
            "item_id": item_ids,
            "title": pa.array(titles, pa.string()),
            "description": pa.array(descriptions, pa.string()),
            "category": pa.array([c.name for c in cats], pa.string()).take(pa.array(item_cat)),
            "price": pa.array(price, pa.float64()),
        }
    )

    # Sparse Dirichlet prefs make clusters focus on a few categories; a little base mass keeps
    # every category reachable.
    k = int(np.clip(n_cat // 3, 6, 10))
    pref = 0.9 * rng.dirichlet(np.full(n_cat, 0.25), size=k) + 0.1 * share
    gender_f = rng.uniform(0.25, 0.75, k)
    gender = np.column_stack([gender_f * 0.97, (1 - gender_f) * 0.97, np.full(k, 0.03)])
    world = _World(
        item_ids=item_ids,
        item_cat=item_cat,
        item_quality=quality,
        item_price_rel=log_rel,
        by_cat=by_cat,
        cat_cdf=cat_cdf,
        cluster_pref=pref / pref.sum(axis=1, keepdims=True),
        cluster_weight=rng.dirichlet(np.full(k, 4.0)),
        cluster_age=rng.uniform(24, 52, k),
        cluster_gender=gender,
    )
    return world, items


def _item_texts(
    rng: np.random.Generator, cats: tuple[_Category, ...], item_cat: np.ndarray, titles_in: str
) -> tuple[list[str], list[str]]:
    """Titles and descriptions from the category word lists (one uniform draw per slot)."""
    u = rng.random((len(item_cat), 7))
    if titles_in == "zh":
        return _item_texts_zh(cats, item_cat, u)
    titles, descriptions = [], []
    for c, (ub, ua, un, uf, ug, us, ut) in zip(item_cat.tolist(), u.tolist(), strict=True):
        cat = cats[c]
        brand = cat.brands[int(ub * len(cat.brands))]
        adj = cat.adjectives[int(ua * len(cat.adjectives))]
        noun = cat.nouns[int(un * len(cat.nouns))]
        i = int(uf * len(cat.features))
        j = (i + 1 + int(ug * (len(cat.features) - 1))) % len(cat.features)  # a different one
        use = cat.uses[int(us * len(cat.uses))]
        feats = f"with {cat.features[i]} and {cat.features[j]}. Perfect for {use}."
        if cat.name_words is None:
            titles.append(f"{brand} {adj} {noun}")
            descriptions.append(f"{adj} {noun} from {brand} {feats}")
        else:
            first, second = cat.name_words
            k = int(ut * len(first) * len(second))
            name = f"The {first[k // len(second)]} {second[k % len(second)]}"
            titles.append(f"{brand} {noun} '{name}'")
            descriptions.append(f"{adj} {brand.lower()} {noun} '{name}' {feats}")
    return titles, descriptions


def _item_texts_zh(
    cats: tuple[_Category, ...], item_cat: np.ndarray, u: np.ndarray
) -> tuple[list[str], list[str]]:
    """Chinese titles and descriptions (`recsight.data.generate_zh`) from the same draws, so
    everything else about the shop is the same as with English titles."""
    from recsight.data.generate_zh import words

    titles, descriptions = [], []
    for c, (ub, ua, un, _, _, _, ut) in zip(item_cat.tolist(), u.tolist(), strict=True):
        brands, adjectives, nouns, *names = words(cats[c].name)
        brand = brands[int(ub * len(brands))]
        adj = adjectives[int(ua * len(adjectives))]
        noun = nouns[int(un * len(nouns))]
        if names:
            first, second = names
            k = int(ut * len(first) * len(second))
            name = f"《{first[k // len(second)]}{second[k % len(second)]}》"
            titles.append(f"{brand}{noun}{name}")
            descriptions.append(f"{adj}{brand}{noun}{name}。")
        else:
            titles.append(f"{brand}{adj}{noun}")
            descriptions.append(f"{adj}{noun}，{brand}出品。")
    return titles, descriptions


def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (rows sum to 1) by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _group_offsets(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _chunk(
    rng: np.random.Generator,
    world: _World,
    lo: int,
    is_bot: np.ndarray,
    n_days: int,
    start_day: int,
) -> _Chunk:
    """Simulate users lo .. lo+len(is_bot)-1 (times in ms since the period start)."""
    n = len(is_bot)
    n_cat = world.cluster_pref.shape[1]
    k = len(world.cluster_weight)
    end_ms = n_days * _MS_PER_DAY

    # --- users: taste, demographics, lifetime, activity -------------------------------------
    cluster = rng.choice(k, n, p=world.cluster_weight)
    noise_w = rng.beta(2.0, 8.0, n)
    pref = (1 - noise_w)[:, None] * world.cluster_pref[cluster] + noise_w[:, None] * (
        rng.dirichlet(np.full(n_cat, 1.0), size=n)
    )
    # A fifth of the users drift part of the way toward another cluster over their lifetime.
    drift_to = (cluster + rng.integers(1, k, n)) % k
    drift = np.where(rng.random(n) < 0.2, rng.uniform(0.3, 0.8, n), 0.0)

    age = np.clip(np.rint(rng.normal(world.cluster_age[cluster], 11.0)), 16, 85).astype(np.int64)
    g_cdf = np.cumsum(world.cluster_gender[cluster], axis=1)
    gender = (g_cdf < rng.random(n)[:, None]).sum(axis=1).clip(max=2)
    region = rng.choice(len(_REGIONS), n, p=_REGION_WEIGHTS / _REGION_WEIGHTS.sum())

    arrival = rng.uniform(0, n_days, n)  # in days since start
    signup_lag = np.where(rng.random(n) < 0.5, 0, rng.exponential(200.0, n).astype(np.int64))
    signup = start_day + np.floor(arrival).astype(np.int64) - signup_lag
    lifetime = rng.exponential(30.0, n)
    window = np.maximum(np.minimum(lifetime, n_days - arrival), 1 / 24)
    one_off = rng.random(n) < 0.3  # never come back after the first session
    rate = np.minimum(np.exp(rng.normal(np.log(0.15), 1.0, n)), 3.0)  # sessions per day
    n_sess = np.where(one_off, 1, 1 + rng.poisson(rate * window))
    n_sess = np.where(is_bot, rng.integers(1, 4, n), n_sess)
    views_mean = 1.0 + np.exp(rng.normal(np.log(4.0), 0.4, n))  # >= 1 for geometric

    # --- sessions ----------------------------------------------------------------------------
    s_user = np.repeat(np.arange(n), n_sess)
    s_first = _group_offsets(n_sess)
    n_s = len(s_user)
    day = np.floor(arrival[s_user] + rng.random(n_s) * window[s_user])
    day[s_first] = np.floor(arrival)  # the first visit is on the arrival day
    hour = rng.choice(24, n_s, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    s_start = (
        day.astype(np.int64) * _MS_PER_DAY
        + hour * _MS_PER_HOUR
        + rng.integers(0, _MS_PER_HOUR, n_s)
    )
    s_start = s_start[np.lexsort((s_start, s_user))]
    s_bot = is_bot[s_user]

    frac = np.clip((s_start / _MS_PER_DAY - arrival[s_user]) / window[s_user], 0, 1)
    mix = (drift[s_user] * frac)[:, None]
    s_pref = (1 - mix) * pref[s_user] + mix * world.cluster_pref[drift_to[s_user]]
    focus = _sample_rows(rng, s_pref)
    second = _sample_rows(rng, s_pref)
    n_views = np.where(
        s_bot,
        rng.integers(150, 600, n_s),
        np.minimum(rng.geometric(1 / views_mean[s_user]), 200),
    )

    # --- views: within-session timing -------------------------------------------------------
    v_sess = np.repeat(np.arange(n_s), n_views)
    v_first = _group_offsets(n_views)
    n_v = len(v_sess)
    v_bot = s_bot[v_sess]
    gap = np.where(
        v_bot,
        rng.integers(1_000, 5_000, n_v),
        np.minimum(rng.lognormal(np.log(35_000), 0.8, n_v), 15 * 60_000).astype(np.int64),
    )
    gap[v_first] = 0
    csum = np.cumsum(gap)
    v_offset = csum - csum[v_first][v_sess]
    duration = v_offset[v_first + n_views - 1]

    # Push sessions apart so each starts >= 1 h after the previous one (incl. its funnel tail)
    # ends: start'_j = C_j + max_{i<=j}(start_i - C_i), with C the exclusive cumsum of the
    # spacings, a segmented running max done in one pass by lifting each user onto its own band.
    spacing = duration + 85 * 60_000  # 25 min for the funnel tail + a 1 h minimum gap
    c = np.cumsum(spacing) - spacing
    c -= c[s_first][s_user]
    lifted = s_start - c
    band = lifted.max() - lifted.min() + 1
    s_start = c + np.maximum.accumulate(lifted + s_user * band) - s_user * band
    v_time = s_start[v_sess] + v_offset

    # --- which items ------------------------------------------------------------------------
    r = rng.random(n_v)
    v_cat = np.where(
        r < 0.75, focus[v_sess], np.where(r < 0.9, second[v_sess], rng.integers(0, n_cat, n_v))
    )
    pos = np.searchsorted(world.cat_cdf, v_cat + rng.random(n_v), side="right")
    item = np.where(v_bot, rng.integers(0, len(world.item_cat), n_v), world.by_cat[pos])

    # --- funnel: rates rise with the user's affinity for the item's category and its quality
    i_cat = world.item_cat[item]
    affinity = s_pref[v_sess, i_cat] / s_pref.max(axis=1)[v_sess]
    quality = world.item_quality[item]
    p_click = np.where(v_bot, 0.0, 0.24 * (0.45 + 2.0 * affinity) * np.exp(0.2 * quality))
    clicked = np.flatnonzero(rng.random(n_v) < np.minimum(p_click, 0.9))
    t_click = v_time[clicked] + rng.integers(1_000, 40_000, len(clicked))

    fav_sel = rng.random(len(clicked)) < 0.05
    fav = clicked[fav_sel]
    t_fav = t_click[fav_sel] + rng.integers(3_000, 90_000, len(fav))

    p_cart = 0.25 * (0.6 + 0.6 * affinity[clicked]) * np.exp(0.25 * quality[clicked])
    cart_sel = rng.random(len(clicked)) < p_cart
    cart = clicked[cart_sel]
    t_cart = t_click[cart_sel] + np.minimum(
        rng.lognormal(np.log(40_000), 0.8, len(cart)), 300_000
    ).astype(np.int64)
    qty = rng.geometric(0.8, len(cart)).astype(np.float64)

    price_rel = world.item_price_rel[item[cart]]
    p_buy = 0.34 * np.exp(0.2 * quality[cart] - 0.3 * price_rel)
    buy_sel = rng.random(len(cart)) < np.minimum(p_buy, 0.95)
    buy = cart[buy_sel]
    t_buy = t_cart[buy_sel] + np.minimum(
        rng.lognormal(np.log(90_000), 0.7, len(buy)), 600_000
    ).astype(np.int64)

    rate_sel = rng.random(len(buy)) < 0.5
    rated = buy[rate_sel]
    t_rate = t_buy[rate_sel] + rng.integers(30_000, 300_000, len(rated))
    stars = 2.7 + 1.6 * affinity[rated] + 0.5 * quality[rated] + rng.normal(0, 0.9, len(rated))
    stars = np.clip(np.rint(stars), 1, 5)

    # --- assemble, clip to the period, sort by (user, time) ---------------------------------
    parts = [np.arange(n_v), clicked, cart, fav, buy, rated]
    src = np.concatenate(parts)
    ts = np.concatenate([v_time, t_click, t_cart, t_fav, t_buy, t_rate])
    code = np.repeat(
        np.array([_VIEW, _CLICK, _CART, _FAV, _PURCHASE, _RATING], dtype=np.int8),
        [len(p) for p in parts],
    )
    value = np.full(len(src), np.nan)
    value[code == _CART] = qty
    value[code == _PURCHASE] = qty[buy_sel]
    value[code == _RATING] = stars
    # Dropping by time alone keeps the funnel consistent: follow-ups are later than their cause.
    keep = np.flatnonzero(ts < end_ms)
    user = s_user[v_sess[src[keep]]]
    order = keep[np.lexsort((code[keep], ts[keep], user))]

    user_ids = pc.binary_join_element_wise(
        "u", pc.cast(pa.array(np.arange(lo, lo + n)), pa.string()), ""
    )
    sess_no = np.arange(n_s) - s_first[s_user]
    session_ids = pc.binary_join_element_wise(
        user_ids.take(pa.array(s_user)), pc.cast(pa.array(sess_no), pa.string()), "-"
    )
    users = pa.table(
        {
            "user_id": user_ids,
            "age": pa.array(age, pa.int64()),
            "gender": pa.array(["F", "M", "X"]).take(pa.array(gender)),
            "region": pa.array(_REGIONS).take(pa.array(region)),
            "signup_date": pa.array(signup.astype(np.int32), pa.date32()),
        }
    )
    truth = pa.table(
        {
            "user_id": user_ids,
            "taste_cluster": pa.array(cluster, pa.int64()),
            "is_bot": pa.array(is_bot, pa.bool_()),
        }
    )
    return _Chunk(
        users=users,
        truth=truth,
        session_ids=session_ids,
        user=s_user[v_sess[src[order]]],
        session=v_sess[src[order]],
        item=item[src[order]],
        ts=ts[order],
        code=code[order],
        value=value[order],
    )


_EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("session_id", pa.string()),
    ]
)
_USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("age", pa.int64()),
        ("gender", pa.string()),
        ("region", pa.string()),
        ("signup_date", pa.date32()),
    ]
)
_TRUTH_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("taste_cluster", pa.int64()), ("is_bot", pa.bool_())]
)


#: Rows per Parquet row group in events.parquet: DuckDB's own group size. Readers (DuckDB,
#: Spark) split a Parquet scan across cores by row group, so a chunk of ~700K rows in one
#: group would leave a core idle on small files.
EVENTS_ROW_GROUP_ROWS = 122_880


def generate_shop(
    out_dir: str | Path,
    n_users: int = 2000,
    n_items: int = 500,
    n_days: int = 60,
    seed: int = 0,
    start: str = "2026-01-01",
    chunk_users: int = 20_000,
    progress: Callable[[int], None] | None = None,
    layout: bool = False,
    titles: str = "en",
) -> ShopSummary:
    """Write a synthetic shop log with known latent structure to `out_dir`.

    Files (overwritten if present):

    - ``events.parquet``: ``event_id`` (str, unique, "e0", "e1", ...), ``user_id`` ("u17"),
      ``item_id`` ("i42"), ``timestamp`` (ms, UTC), ``event_type`` (one of
      ``recsight.data.schema.EVENT_TYPES``), ``value`` (float64: stars 1-5 for ``rating``,
      quantity >= 1 for ``cart``/``purchase``, else null), ``session_id`` ("u17-3": the user's
      4th session). Rows are sorted by (user number, timestamp) and every event lies within
      ``[start, start + n_days)``.
    - ``items.parquet``: ``item_id, title, description, category, price``.
    - ``users.parquet``: ``user_id, age, gender ("F"/"M"/"X"), region, signup_date``.
    - ``users_truth.parquet``: ``user_id, taste_cluster, is_bot`` (the hidden ground truth).

    With ``layout=True`` the events, items and users are written in the canonical dataset
    layout instead (`recsight.data.layout`: ``events/event_date=.../``, ``items.parquet``,
    ``users.parquet``, ``manifest.json``), streamed chunk by chunk like the single file, so
    100M events need no more memory than 1M; ``users_truth.parquet`` sits beside them.

    Every view can lead to a click; clicks to carts and favs; carts to purchases; purchases to
    ratings. Each follow-up shares the view's user, item and session and comes seconds to
    minutes after its cause; within a session events are minutes apart, and a user's sessions
    are at least an hour apart. Every user has at least one session.

    At the defaults (``n_days=60``) users average about `AVG_EVENTS_PER_USER` (~34) events, so
    ~29,000 users give ~1M events; the count grows with ``n_days``.

    Determinism: the same arguments give byte-identical files. The item catalog and taste
    clusters depend only on ``seed`` and ``n_items``; users and events are drawn per chunk of
    ``chunk_users`` users from ``SeedSequence(seed, spawn_key=(2, chunk_index))``, so they also
    depend on ``chunk_users``. Memory is bounded by the chunk, not by ``n_users``.

    Args:
        out_dir: folder to write into (created if missing).
        n_users: number of users; ~0.3% of them (at least one when ``n_users >= 300``) are bots.
        n_items: catalog size; ``sqrt(n_items)`` categories, clipped to 8..30.
        n_days: length of the simulated period in days.
        seed: random seed.
        start: first day of the period, ISO date (``YYYY-MM-DD``), midnight UTC.
        chunk_users: users simulated and written per chunk.
        progress: called after each chunk with the number of users finished so far.
        layout: write the canonical dataset layout rather than ``events.parquet``.
        titles: ``en`` or ``zh``: item titles and descriptions in English or in Chinese
            (written without spaces); nothing else about the shop changes.

    Returns:
        A `ShopSummary` with the paths written and the number of events per type.
    """
    if n_users < 1 or n_items < 1 or n_days < 1 or chunk_users < 1:
        raise ValueError("n_users, n_items, n_days and chunk_users must all be >= 1")
    if titles not in ("en", "zh"):
        raise ValueError(f"titles: expected 'en' or 'zh', got {titles!r}")
    start_day = (dt.date.fromisoformat(start) - dt.date(1970, 1, 1)).days
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        name: str(out / f"{name}.parquet") for name in ("events", "items", "users", "users_truth")
    }
    if layout:
        from recsight.data.layout import EVENTS_DIR, MANIFEST

        files["events"] = str(out / EVENTS_DIR)
        files["manifest"] = str(out / MANIFEST)

    world, items = _build_world(
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), n_items, titles
    )

    # Bots are picked over all users at once so their number does not depend on chunking (the
    # only state that grows with n_users: 0.3% of them, ~1 MB of indices per 40M users).
    n_bots = max(1, round(0.003 * n_users)) if n_users >= 300 else 0
    bot_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    bots = np.sort(bot_rng.choice(n_users, n_bots, replace=False))

    vocab = pa.array(EVENT_TYPES, pa.string())
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    start_ms = start_day * _MS_PER_DAY
    n_events = 0
    with contextlib.ExitStack() as stack:
        if layout:
            from recsight.data.layout import LayoutWriter

            lw = stack.enter_context(LayoutWriter(out, source="recsight generate", overwrite=True))
            lw.write_items(items)
            write_events, write_users = lw.write, lw.write_users
        else:
            pq.write_table(items, files["items"])
            ev_w = stack.enter_context(pq.ParquetWriter(files["events"], _EVENTS_SCHEMA))
            us_w = stack.enter_context(pq.ParquetWriter(files["users"], _USERS_SCHEMA))

            def write_events(t: pa.Table) -> None:
                ev_w.write_table(t, row_group_size=EVENTS_ROW_GROUP_ROWS)

            write_users = us_w.write_table
        tr_w = stack.enter_context(pq.ParquetWriter(files["users_truth"], _TRUTH_SCHEMA))
        for chunk_no, lo in enumerate(range(0, n_users, chunk_users)):
            hi = min(lo + chunk_users, n_users)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, chunk_no)))
            is_bot = np.zeros(hi - lo, dtype=bool)
            is_bot[bots[(bots >= lo) & (bots < hi)] - lo] = True
            ch = _chunk(rng, world, lo, is_bot, n_days, start_day)
            m = len(ch.ts)
            event_ids = pc.binary_join_element_wise(
                "e", pc.cast(pa.array(np.arange(n_events, n_events + m)), pa.string()), ""
            )
            table = pa.table(
                [
                    event_ids,
                    ch.users["user_id"].combine_chunks().take(pa.array(ch.user)),
                    world.item_ids.take(pa.array(ch.item)),
                    pa.array(ch.ts + start_ms, pa.timestamp("ms", tz="UTC")),
                    vocab.take(pa.array(ch.code)),
                    pa.array(ch.value, pa.float64(), from_pandas=True),  # NaN -> null
                    ch.session_ids.take(pa.array(ch.session)),
                ],
                schema=_EVENTS_SCHEMA,
            )
            write_events(table)
            write_users(ch.users)
            tr_w.write_table(ch.truth)
            counts += np.bincount(ch.code, minlength=len(EVENT_TYPES))
            n_events += m
            if progress is not None:
                progress(hi)

    return ShopSummary(
        out_dir=out,
        n_events=n_events,
        n_users=n_users,
        n_items=n_items,
        files=files,
        event_counts=dict(zip(EVENT_TYPES, counts.tolist(), strict=True)),
    )
