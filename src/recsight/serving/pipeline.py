"""What the service serves: a saved pipeline, not a bare model.

candidates -> score -> filter (seen, category, unavailable) -> rank -> explain, with fallbacks
for histories the main model cannot score (a content model when one is saved, then
popularity), and a manifest that names what is running (`GET /health` shows it).

A pipeline folder holds ``manifest.json`` and one sub-folder per model. A bare model folder
(what `recsight train` writes) is served as a pipeline with a popularity fallback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsight.errors import InputError
from recsight.llm.explain import Catalog, explain_recommendation
from recsight.llm.generate import LLM
from recsight.models.ann import AnnIndex, ann_top_k, supports_ann
from recsight.models.base import Recommender, history_user_keys, read_config
from recsight.models.manifest import MANIFEST
from recsight.models.registry import load_model
from recsight.models.topk import id_keys, top_k

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "fav": 3.0, "purchase": 5.0}


@dataclass
class History:
    """One user's recent events, oldest first (what the scorer folds in); `user_id` is None
    for an anonymous history (it keys the shared tie rule)."""

    user_id: str | None = None
    items: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)

    def weights(self) -> list[float]:
        """Per-event weights: ratings count by value, other types by `EVENT_WEIGHTS`."""
        out = []
        for t, v in zip(self.types, self.values, strict=True):
            if t == "rating":
                # math, not numpy: a numpy call per event costs ~1 us of dispatch
                out.append(1.0 if v is None or math.isnan(v) else float(v))
            else:
                out.append(EVENT_WEIGHTS.get(t, 1.0))
        return out


@dataclass
class Recommendation:
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    explanation: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RecommendRequest:
    """One recommendation request: a history and what to return for it."""

    history: History
    k: int = 10
    exclude_seen: bool = True
    category: str | None = None
    explain: bool = False


@dataclass
class RecommendationList:
    items: list[Recommendation]
    source: str  # which stage answered: "main", a fallback model's name, or "popular"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(path).as_posix().encode())
            with f.open("rb") as fh:  # streamed: a 100M-event ALS folder holds 2 GB
                hashlib.file_digest(fh, lambda: h)
    return h.hexdigest()[:12]


def _column_dict(meta: pd.DataFrame, column: str) -> dict[str, str]:
    if column not in meta.columns:
        return {}
    col = meta[column].dropna()
    # through lists: iterating a pandas string column element by element took 3.8 CPU s
    # over a 1M-item catalog
    return dict(zip(map(str, col.index.tolist()), map(str, col.tolist()), strict=True))


class ItemFilters:
    """One model's item filters, precomputed when the item metadata is set, so a request pays
    nothing proportional to the catalog beyond the scoring itself: availability, category
    codes, and the popularity order of the available items overall and within each category.
    """

    #: category masks kept (each is one byte per item)
    MASKS = 64

    def __init__(self, model: Recommender, meta: pd.DataFrame, unavailable: set[str]):
        ids = pd.Index(model.items_.ids)
        self.available = ~ids.isin(list(unavailable)) if unavailable else None
        if "category" in meta.columns:
            cats = meta["category"].reindex(ids)
            codes, self._categories = pd.factorize(cats, use_na_sentinel=True)
        else:
            codes, self._categories = np.full(len(ids), -1), pd.Index([])
        self.has_categories = "category" in meta.columns
        self.codes = codes.astype(np.int32)
        self._code = {str(c): i for i, c in enumerate(self._categories)}
        pop = np.asarray(model.item_popularity_, dtype=np.float32)
        self.popularity = pop
        keep = np.ones(len(ids), bool) if self.available is None else self.available
        # available items grouped by category code (-1 first), most popular first within each
        items = np.flatnonzero(keep)
        order = np.lexsort((items, -pop[items], self.codes[items]))
        self._by_cat = items[order]
        bounds = np.searchsorted(self.codes[self._by_cat], np.arange(-1, len(self._categories) + 1))
        self._bounds = bounds
        self._all = items[np.lexsort((items, -pop[items]))]
        # negated popularity along each order (ascending), for the searches at a cut-off
        self._by_cat_neg = -pop[self._by_cat]
        self._all_neg = -pop[self._all]
        self.mask = functools.lru_cache(maxsize=self.MASKS)(self._mask)

    def popularity_order(self, category: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Available items (of `category`), most popular first, and their negated
        popularity (so ascending)."""
        if category is None:
            return self._all, self._all_neg
        code = self._code.get(category)
        if code is None:
            return self._all[:0], self._all_neg[:0]
        part = slice(self._bounds[code + 1], self._bounds[code + 2])
        return self._by_cat[part], self._by_cat_neg[part]

    def _mask(self, category: str | None) -> np.ndarray | None:
        """Boolean mask of the allowed items, or None when every item is allowed."""
        if category is None:
            return self.available
        code = self._code.get(category, -2)  # an unknown category allows nothing
        mask = self.codes == code
        return mask if self.available is None else mask & self.available


#: A request the main model answers in `_rank_batch`: (request number, known items, their
#: weights, allowed mask, their item indices).
_Batched = tuple[int, list[str], list[float], np.ndarray | None, np.ndarray]


class Pipeline:
    """A loaded pipeline: main model, fallbacks, item metadata and the manifest."""

    def __init__(
        self,
        main: Recommender,
        fallbacks: Sequence[Recommender] = (),
        manifest: dict[str, Any] | None = None,
        items: pd.DataFrame | None = None,
        llm: LLM | None = None,
        ann: AnnIndex | None = None,
    ):
        self.main = main
        # candidate retrieval for the main model, when its folder holds an index
        self.ann = ann if ann is not None and supports_ann(main) else None
        self.fallbacks = list(fallbacks)
        self.manifest = manifest or {}
        self.llm = llm
        self.items = items if items is not None else pd.DataFrame(columns=["item_id"])
        self._catalog_lock = threading.Lock()
        self._index_items()
        # the item id -> index dicts a request's lookups use, built now: built lazily, the
        # 1M-item dict of a 100M-event shop stalled the first requests for seconds
        for model in (self.main, *self.fallbacks):
            model.items_.warm()

    @classmethod
    def load(
        cls, folder: str | Path, items: pd.DataFrame | None = None, llm: LLM | None = None
    ) -> Pipeline:
        """Load a pipeline folder, or wrap a bare saved model folder. `llm`, when given,
        rewords explanations (each reworded text must pass the grounding check)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such model folder")
        if (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text())
            main = load_model(folder / manifest["main"])
            fallbacks = [load_model(folder / f) for f in manifest.get("fallbacks", [])]
            model_dir = folder / manifest["main"]
        else:
            main, fallbacks, model_dir = load_model(folder), [], folder
            manifest = {"main": ".", "fallbacks": [], "training_cutoff": None, "config": {}}
        cfg = read_config(model_dir)
        manifest = {
            **manifest,
            "model": cfg["name"],
            "params": cfg["params"],
            "model_version": f"{cfg['name']}-{_digest(model_dir)}",
            "id_index_version": hashlib.sha256(
                "\n".join(map(str, main.items_.ids)).encode()
            ).hexdigest()[:12],
            "n_items": len(main.items_),
            "n_users": len(main.users_),
            "path": str(folder),
        }
        return cls(main, fallbacks, manifest, items, llm, AnnIndex.load(model_dir))

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", self.main.name))

    def _index_items(self) -> None:
        items = self.items
        self._meta = items.set_index("item_id") if "item_id" in items.columns else pd.DataFrame()
        # plain dicts: per-request lookups must not pay pandas' indexing overhead
        self._titles = _column_dict(self._meta, "title")
        self._categories = _column_dict(self._meta, "category")
        self._catalog: Catalog | None = None  # built on first use (`catalog`)
        # items marked unavailable (an `available` column that is false) are never served
        if "available" in self._meta.columns:
            flags = self._meta["available"].map(
                lambda v: str(v).strip().lower() not in {"false", "0", "no"}
            )
            self._unavailable = set(self._meta.index[~flags])
        else:
            self._unavailable = set()
        self._filters = {
            id(m): ItemFilters(m, self._meta, self._unavailable)
            for m in [self.main, *self.fallbacks]
        }

    def set_items(self, items: pd.DataFrame) -> None:
        """Replace the item metadata (titles, categories, availability)."""
        self.items = items
        self._index_items()

    @property
    def catalog(self) -> Catalog:
        """The names explanations may use (`recsight.llm.explain.Catalog`), built on first
        use: 10 CPU s over a 1M-item catalog that start-up need not pay, since only requests
        for explanations read it."""
        with self._catalog_lock:
            if self._catalog is None:
                items = self.items
                if "item_id" not in items.columns:
                    items = pd.DataFrame({"item_id": pd.Series(dtype=str)})
                self._catalog = Catalog.from_items(items)
            return self._catalog

    def title(self, item_id: str) -> str | None:
        return self._titles.get(item_id)

    def category(self, item_id: str) -> str | None:
        return self._categories.get(item_id)

    # -- candidates and filters -----------------------------------------------------------
    def _candidates(self, model: Recommender, category: str | None) -> np.ndarray | None:
        """Mask of the items `model` may recommend, or None when every item is allowed
        (precomputed: see `ItemFilters`)."""
        filters = self._filters[id(model)]
        if category is not None and not filters.has_categories:
            raise InputError("category filter: the items have no category column")
        return filters.mask(category)

    # -- the pipeline ---------------------------------------------------------------------
    def recommend(
        self,
        history: History,
        k: int = 10,
        exclude_seen: bool = True,
        category: str | None = None,
        explain: bool = False,
    ) -> RecommendationList:
        """Recommendations for a history (a known user's, an anonymous one, or empty)."""
        answer = self.recommend_many(
            [RecommendRequest(history, k, exclude_seen, category, explain)]
        )
        if isinstance(answer[0], InputError):
            raise answer[0]
        return answer[0]

    def recommend_many(
        self, requests: Sequence[RecommendRequest]
    ) -> list[RecommendationList | InputError]:
        """`recommend` for several requests (a micro-batch of concurrent ones), the main
        model scoring all the histories it answers in one pass (`score_histories`). Each
        answer is the one `recommend` gives for the request alone (scores may differ in the
        last bits: see `Recommender.score_histories`); a request's bad input comes back as
        its own `InputError` in its place, so it fails alone."""
        out: list[RecommendationList | InputError | None] = [None] * len(requests)
        batch: list[_Batched] = []
        for n, req in enumerate(requests):
            try:
                if not 1 <= req.k <= 1000:
                    raise InputError(f"k must be between 1 and 1000, got {req.k}")
                stage = self._stage(req.history)
                if stage is None:  # an empty history, or one no model knows: popularity
                    recs = self._popular(req.history, req.k, req.exclude_seen, req.category)
                    out[n] = RecommendationList(recs, "popular")
                    continue
                source, model, items, weights, idx = stage
                allowed = self._candidates(model, req.category)
                if model is self.main and self._batched:
                    batch.append((n, items, weights, allowed, idx))
                    continue
                # a fallback model, or a main model that cannot answer several at once
                ids, scores = model.recommend_for_history(
                    items,
                    k=req.k,
                    exclude_seen=req.exclude_seen,
                    candidates=allowed,
                    weights=weights,
                    user=req.history.user_id,
                )
                out[n] = self._answer(model, source, req, items, weights, ids, scores)
            except InputError as exc:
                out[n] = exc
        if batch:
            self._rank_batch(requests, batch, out)
        return out  # type: ignore[return-value]

    def _rank_batch(
        self,
        requests: Sequence[RecommendRequest],
        batch: list[_Batched],
        out: list[RecommendationList | InputError | None],
    ) -> None:
        """Answer the main model's share of a micro-batch (`batch`: request number, known
        items, weights, allowed mask, item indices) into `out`: the histories scored, or
        folded in for ANN retrieval, in one pass; requests of the same shape (k, exclusion,
        filter) ranked in one call, since the per-call overhead of masking, faiss and top-k
        is most of ranking one row."""
        model = self.main
        histories, weights = [b[1] for b in batch], [b[2] for b in batch]
        if self.ann is not None:
            # the indices `_stage` looked up, not a second lookup of every history item
            seen = model._index_matrix(
                [b[4] for b in batch], [np.asarray(w, np.float32) for w in weights]
            )
            queries = model.fold_in(seen)
        else:
            scores, seen = model.score_histories(histories, weights)
        shapes: dict[tuple, list[int]] = {}
        for row, (n, _, _, allowed, _) in enumerate(batch):
            req = requests[n]
            shapes.setdefault((req.k, req.exclude_seen, id(allowed)), []).append(row)
        for rows in shapes.values():
            # one shape for the whole batch (always, for a batch of one): no row copies (scipy's
            # `seen[:]` copies the matrix, ~0.08 ms for 2 rows)
            whole = len(rows) == len(batch)
            sel = slice(None) if whole else rows
            seen_rows = seen if whole else seen[rows]
            first = requests[batch[rows[0]][0]]
            allowed = batch[rows[0]][3]
            keys = id_keys(
                ["" if (u := requests[batch[r][0]].history.user_id) is None else u for r in rows]
            )
            if self.ann is not None:
                ids, vals = ann_top_k(
                    model,
                    self.ann,
                    queries[sel],
                    seen_rows if first.exclude_seen else None,
                    first.k,
                    keys,
                    allowed,
                )
            else:
                ids, vals = model._rank(
                    scores[sel], seen_rows, first.k, first.exclude_seen, allowed, keys
                )
            for j, row in enumerate(rows):
                n, items, wts, _, _ = batch[row]
                out[n] = self._answer(model, "main", requests[n], items, wts, ids[j], vals[j])

    @property
    def _batched(self) -> bool:
        """Whether the main model answers several histories in one pass: through its ANN
        index (one fold-in, one search per shape), or because its `recommend_for_history`
        is `score_histories` then `_rank` (the base class's)."""
        own = type(self.main).recommend_for_history
        return self.ann is not None or own is Recommender.recommend_for_history

    def _stage(
        self, history: History
    ) -> tuple[str, Recommender, list[str], list[float], np.ndarray] | None:
        """The first model that knows any of the history's items (main, then fallbacks),
        with the items it knows, their weights and their indices in the model; None for an
        empty history or one that no model knows."""
        if not history.items:
            return None
        stages: list[tuple[str, Recommender]] = [("main", self.main)]
        stages += [(m.name, m) for m in self.fallbacks]
        all_weights = history.weights()
        for source, model in stages:
            idx = model.items_.index_of(history.items, missing="ignore")
            known = idx >= 0
            if not known.any():
                continue  # this model knows none of the history: try the next stage
            items = [i for i, ok in zip(history.items, known, strict=True) if ok]
            weights = [w for w, ok in zip(all_weights, known, strict=True) if ok]
            return source, model, items, weights, idx[known]
        return None

    def _answer(
        self,
        model: Recommender,
        source: str,
        req: RecommendRequest,
        items: list[str],
        weights: list[float],
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> RecommendationList:
        recs = self._build(ids, scores)
        if req.explain:
            self._explain(model, items, weights, recs)
        return RecommendationList(recs, source)

    def _popular(
        self, history: History, k: int, exclude_seen: bool, category: str | None
    ) -> list[Recommendation]:
        filters = self._filters[id(self.main)]
        if category is not None and not filters.has_categories:
            raise InputError("category filter: the items have no category column")
        order, neg = filters.popularity_order(category)
        seen = np.zeros(0, np.int64)
        if exclude_seen and history.items:
            seen = self.main.items_.index_of(history.items, missing="ignore")
            seen = np.unique(seen[seen >= 0])
        # the k best unseen items lie among the first k + len(seen) in popularity order; the
        # items tied with the k-th go along, so the shared tie rule chooses among them
        pop = filters.popularity
        head = order[: k + len(seen)]
        head = head[~np.isin(head, seen)]
        if len(head) >= k:
            kth = pop[head[k - 1]]
            head = order[: np.searchsorted(neg, -kth, side="right")]
            head = head[~np.isin(head, seen)]
        if not len(head):
            return []
        cols, _ = top_k(
            pop[head][None, :],
            k,
            history_user_keys(history.user_id),
            self.main.item_keys_[head],
        )
        ids = self.main.items_.ids
        recs = [Recommendation(str(ids[head[c]]), float(pop[head[c]])) for c in cols[0] if c >= 0]
        for r in recs:
            r.title, r.category = self.title(r.item_id), self.category(r.item_id)
            r.explanation = "popular with other users" if r.score > 0 else None
        return recs

    def _build(self, ids: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
        return [
            Recommendation(str(i), float(s), self.title(str(i)), self.category(str(i)))
            for i, s in zip(ids, scores, strict=True)
            if i is not None
        ]

    def _explain(
        self, model: Recommender, items: list[str], weights: list[float], recs: list[Recommendation]
    ) -> None:
        """Grounded explanations: built only from the history items that the model's own
        attribution names (reworded by the LLM when one is configured and its text passes
        the grounding check)."""
        for r in recs:
            exp = explain_recommendation(
                model, items, r.item_id, self.catalog, llm=self.llm, top=2, weights=weights
            )
            r.evidence = [
                {"item_id": e.item_id, "title": e.title, "contribution": e.weight}
                for e in exp.evidence
            ]
            r.explanation = exp.text if exp.grounded else "popular with users like you"

    def recommend_text(
        self, text: str, k: int = 10, category: str | None = None
    ) -> RecommendationList:
        """Recommendations for a free-text interest, by the first model that reads text."""
        from recsight.llm.content import recommend_for_text

        for model in [self.main, *self.fallbacks]:
            if hasattr(model, "recommend_text"):
                allowed = self._candidates(model, category)
                ids, scores = recommend_for_text(model, text, k=k, candidates=allowed)
                return RecommendationList(self._build(ids, scores), model.name)
        raise InputError(
            "free-text interests need a text-aware model in the pipeline (e.g. "
            "`content`); this pipeline has none"
        )

    def similar_items(self, item_id: str, k: int = 10) -> list[Recommendation]:
        """Items most similar to `item_id` under the first model that knows it."""
        for model in [self.main, *self.fallbacks]:
            if item_id in model.items_:
                try:
                    ids, scores = model.similar_items(item_id, k)
                except NotImplementedError:
                    continue  # e.g. popularity has no notion of item similarity
                return self._build(ids, scores)
        raise InputError(f"item {item_id!r} is unknown to the served models")
