"""The estimator contract every recsight model follows.

Models are scikit-learn-style: hyperparameters are stored unchanged by ``__init__``, ``fit``
learns attributes ending in ``_``, and ``get_params``/``set_params`` work on the ``__init__``
signature. A subclass implements the math (`fit`, `score_all`, `score_history`, and where the
model has them `similar_items` and `explain`); this base class turns it into the id-level
surface the CLI and the service use: batched ``recommend`` with ``exclude_seen`` and
``candidates``, history fold-in, pair scores, and safe ``save``/``load`` (JSON + ``.npz``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsight import __version__
from recsight.data.dataset import IdIndex, Interactions
from recsight.errors import InputError
from recsight.models.topk import id_keys, top_k, top_k_shared

#: Bumped whenever the saved layout of any model changes; loading another version fails.
FORMAT_VERSION = 1

#: Scores held at once by `recommend` and `score` (float32: 256 MB, plus the ranking's
#: temporaries); a 1M-item catalog is scored 67 users at a time, a small one 1,024.
RECOMMEND_SCORES = 2**26
RECOMMEND_MAX_ROWS = 1024


def recommend_chunk_rows(n_items: int) -> int:
    """Users scored at once over a catalog of `n_items` (at least one)."""
    return max(1, min(RECOMMEND_MAX_ROWS, RECOMMEND_SCORES // max(n_items, 1)))


class Recommender:
    """Base class: subclasses set `name`, `explicit` and `_state` (learned attribute names
    saved besides the id indexes and `seen_`)."""

    name: ClassVar[str]
    explicit: ClassVar[bool] = False
    _state: ClassVar[tuple[str, ...]] = ()
    #: learned attributes holding one row per user (in `users_` order): what `drop_users`
    #: removes besides the user's id and `seen_` row
    _user_state: ClassVar[tuple[str, ...]] = ()

    users_: IdIndex
    items_: IdIndex
    seen_: sp.csr_matrix
    item_popularity_: np.ndarray
    item_keys_: np.ndarray

    # -- hyperparameters ----------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Hyperparameter names, from the ``__init__`` signature."""
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__``."""
        return {p: getattr(self, p) for p in self.param_names()}

    def set_params(self, **params: Any) -> Recommender:
        """Change hyperparameters (refit afterwards); unknown names raise `InputError`."""
        valid = self.param_names()
        for key, value in params.items():
            if key not in valid:
                raise InputError(
                    f"model {self.name!r} has no parameter {key!r}; valid: {', '.join(valid)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning -----------------------------------------------------------------------------
    def fit(self, train: Interactions) -> Recommender:
        """Learn from `train`; returns self."""
        raise NotImplementedError

    def _set_training(self, train: Interactions, seen: sp.csr_matrix) -> None:
        """Record the id space and the training matrix every model keeps."""
        self._set_matrix(train.users, train.items, seen)

    def _set_matrix(self, users: IdIndex, items: IdIndex, seen: sp.csr_matrix) -> None:
        """`_set_training` from the id indexes and the user x item matrix (kept without a
        copy when it already is float32 CSR)."""
        self.users_ = users
        self.items_ = items
        self.seen_ = seen.tocsr().astype(np.float32, copy=False)
        self.seen_.sort_indices()
        self._derive()

    def _derive(self) -> None:
        """Attributes computed from saved state (after fit and after load)."""
        # entries per column, counted without a CSC copy of the matrix
        n_items = self.seen_.shape[1]
        self.item_popularity_ = np.bincount(self.seen_.indices, minlength=n_items).astype(
            np.float32
        )
        self.item_keys_ = id_keys(self.items_.ids)

    def drop_users(self, keep: np.ndarray) -> None:
        """Remove the users whose `keep` entry is False: their ids, `seen_` rows and
        `_user_state` rows (the right to erasure). Item-side state learned from them stays:
        `recsight.privacy.unlearn` handles it."""
        self._check_fitted()
        rows = np.flatnonzero(keep)
        self.users_ = IdIndex(self.users_.ids[rows])
        self.seen_ = self.seen_[rows]
        for key in self._user_state:
            value = getattr(self, key)
            if value is not None:  # None: state this model was saved without
                setattr(self, key, value[rows])
        self._derive()

    def _check_fitted(self) -> None:
        if not hasattr(self, "seen_"):
            raise InputError(f"model {self.name!r} is not fitted yet; call fit() first")

    @property
    def n_items(self) -> int:
        return self.seen_.shape[1]

    # -- math each model implements ---------------------------------------------------------
    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for known users (internal indices), float32
        ``(len(user_idx), n_items)``, higher is better."""
        raise NotImplementedError

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores of every item for ad-hoc histories (rows of weights over the model's items)."""
        raise NotImplementedError

    def shared_scores(self) -> np.ndarray | None:
        """One float32 score per item when `score_all` gives every known user the same row
        (popularity), else None. Rankers then take each user's top k from one global order
        (`recsight.models.topk.top_k_shared`, the same lists) instead of a row per user."""
        return None

    def similar_items(self, item: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The `k` items most similar to `item` (ids, similarities), the item itself excluded."""
        self._check_fitted()
        i = int(self._item_idx([item])[0])
        sims = self._item_similarities(i).astype(np.float32)
        sims[i] = -np.inf
        ids, scores = self._top_k(sims[None, :], k, id_keys([item]))
        return ids[0], scores[0]

    def _item_similarities(self, i: int) -> np.ndarray:
        """Similarity of every item to item `i`: by default the cosine of `_item_vectors`."""
        q = self._item_vectors()
        norms = np.linalg.norm(q, axis=1) + 1e-12
        return (q @ q[i]) / (norms * norms[i])

    def _item_vectors(self) -> np.ndarray:
        """One vector per item for `similar_items` (cosine similarity)."""
        raise NotImplementedError

    def explain(self, user: str, item: str, top: int = 3) -> list[tuple[str, float]]:
        """The user's training-history items that contributed most to `item`'s score, with
        their contributions (largest first, positive contributions only)."""
        self._check_fitted()
        u = int(self._user_idx([user])[0])
        i = int(self._item_idx([item])[0])
        return self._explain_history(*self._user_history(u), i, top)

    def explain_history(
        self,
        items: Sequence[str],
        item: str,
        top: int = 3,
        weights: Sequence[float] | None = None,
    ) -> list[tuple[str, float]]:
        """`explain` for an ad-hoc history (unknown history ids are ignored)."""
        self._check_fitted()
        hist = self._ad_hoc_history(items, weights)
        i = int(self._item_idx([item])[0])
        return self._explain_history(*hist, i, top)

    def _user_history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """The (item indices, weights) `explain` reads for user index `u`: the training row."""
        row = self.seen_[u]
        return row.indices, row.data

    def _ad_hoc_history(
        self, items: Sequence[str], weights: Sequence[float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (item indices, weights) `explain_history` reads for an ad-hoc history."""
        h = self._history_matrix(items, weights)
        return h.indices, h.data

    def _explain_history(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int, top: int
    ) -> list[tuple[str, float]]:
        contrib = self._contributions(hist_items, hist_weights, item)
        order = np.argsort(-contrib, kind="stable")[:top]
        order = order[contrib[order] > 0]
        return [(str(self.items_.ids[hist_items[j]]), float(contrib[j])) for j in order]

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        """Per-history-item contribution to `item`'s score (same order as `hist_items`)."""
        raise NotImplementedError

    def _history_row(self, hist_items: np.ndarray, hist_weights: np.ndarray) -> sp.csr_matrix:
        """One history as the 1 x n_items float32 row `score_history` takes."""
        return sp.csr_matrix(
            (hist_weights.astype(np.float32), (np.zeros(len(hist_items), np.int64), hist_items)),
            shape=(1, self.n_items),
        )

    # -- id-level surface -----------------------------------------------------------------
    def _user_idx(self, users: Sequence[str]) -> np.ndarray:
        return _known_indices(self.users_, users, "user")

    def _item_idx(self, items: Sequence[str]) -> np.ndarray:
        return _known_indices(self.items_, items, "item")

    def _history_matrix(
        self, items: Sequence[str], weights: Sequence[float] | None = None
    ) -> sp.csr_matrix:
        """One history as a 1 x n_items CSR; unknown ids are dropped, repeats summed."""
        return self._histories_matrix([items], [weights])

    def _histories_matrix(
        self,
        histories: Sequence[Sequence[str]],
        weights: Sequence[Sequence[float] | None],
    ) -> sp.csr_matrix:
        """Histories as a len(histories) x n_items CSR, one row each; unknown ids are
        dropped, repeats summed. One scipy constructor for the batch: a constructor costs
        ~50 us, more than the rest of a request's history handling."""
        rows: list[np.ndarray] = []
        row_weights: list[np.ndarray] = []
        for items, wts in zip(histories, weights, strict=True):
            items = [items] if isinstance(items, str) else list(items)
            if wts is None:
                w = np.full(len(items), self._history_default_weight(), np.float32)
            else:
                w = np.asarray(wts, np.float32)
            if len(w) != len(items):
                raise InputError(
                    f"weights: expected {len(items)} values (one per item), got {len(w)}"
                )
            idx = self.items_.index_of(items, missing="ignore") if items else np.zeros(0, np.int64)
            rows.append(idx)
            row_weights.append(w)
        return self._index_matrix(rows, row_weights)

    def _index_matrix(
        self, rows: Sequence[np.ndarray], weights: Sequence[np.ndarray]
    ) -> sp.csr_matrix:
        """`_histories_matrix` of histories already looked up: item indices (-1, unknown:
        dropped) and their float32 weights, one pair of arrays per row."""
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        indptr = np.zeros(len(rows) + 1, np.int64)
        for r, (idx, w) in enumerate(zip(rows, weights, strict=True)):
            keep = idx >= 0
            cols.append(idx[keep])
            vals.append(w[keep])
            indptr[r + 1] = indptr[r] + len(cols[-1])
        m = sp.csr_matrix(
            (
                np.concatenate(vals) if vals else np.zeros(0, np.float32),
                np.concatenate(cols) if cols else np.zeros(0, np.int64),
                indptr,
            ),
            shape=(len(rows), self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        return m

    def _history_default_weight(self) -> float:
        """Weight of a history event when the caller gives none."""
        return 1.0

    def _candidate_mask(self, candidates: Sequence[str] | np.ndarray | None) -> np.ndarray | None:
        """Boolean mask of allowed items; unknown candidate ids are dropped. `candidates` may
        already be such a mask (length n_items), as the service precomputes them."""
        if candidates is None:
            return None
        if isinstance(candidates, np.ndarray) and candidates.dtype == bool:
            if candidates.shape != (self.n_items,):
                raise InputError(
                    f"candidates: a mask needs {self.n_items} entries, got {candidates.shape}"
                )
            return candidates
        mask = np.zeros(self.n_items, dtype=bool)
        idx = self.items_.index_of(list(candidates), missing="ignore")
        mask[idx[idx >= 0]] = True
        return mask

    def _top_k(
        self, scores: np.ndarray, k: int, user_keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row-wise top-k of a score matrix where -inf marks excluded items, under the shared
        tie rule (`recsight.models.topk`; `user_keys` = `id_keys` of each row's user). Returns
        (ids, scores) of width min(k, n_items); rows with fewer allowed items are padded with
        None ids and NaN scores."""
        if k < 1:
            raise InputError(f"k must be a positive integer, got {k}")
        cols, vals = top_k(scores, min(k, scores.shape[1]), user_keys, self.item_keys_)
        ids = self.items_.ids[np.maximum(cols, 0)].astype(object)
        ids[cols < 0] = None
        return ids, vals

    def _rank(
        self,
        scores: np.ndarray,
        seen: sp.csr_matrix,
        k: int,
        exclude_seen: bool,
        allowed: np.ndarray | None,
        user_keys: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        # an empty history has nothing to personalise: answer in popularity order
        empty = np.diff(seen.indptr) == 0
        if empty.any():
            scores[empty] = self.item_popularity_
        if exclude_seen:
            rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
            scores[rows, seen.indices] = -np.inf
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        return self._top_k(scores, k, user_keys)

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for known users: (object array of item ids ``(n_users, k)``, float32
        scores). Unknown user ids raise `InputError`; unknown candidate ids are dropped."""
        self._check_fitted()
        users = [users] if isinstance(users, str) else list(users)
        uidx = self._user_idx(users)
        allowed = self._candidate_mask(candidates)
        if k < 1:
            raise InputError(f"k must be a positive integer, got {k}")
        width = min(k, len(self.items_))
        keys = id_keys(self.users_.ids[uidx])
        seen = self.seen_[uidx]
        ids = np.empty((len(uidx), width), dtype=object)
        scores = np.empty((len(uidx), width), dtype=np.float32)
        # users with an empty history get popularity order (as `_rank` gives them), and a
        # model whose scores are the same for everyone ranks every user that way: both from
        # one global order, not a row of scores per user
        cold = np.diff(seen.indptr) == 0
        shared = self.shared_scores()
        by_order = cold if shared is None else np.ones(len(uidx), dtype=bool)
        for sel, vec in ((cold, self.item_popularity_), (by_order & ~cold, shared)):
            rows = np.flatnonzero(sel)
            if len(rows):
                s = np.array(vec, dtype=np.float32)
                if allowed is not None:
                    s[~allowed] = -np.inf
                masked = seen[rows] if exclude_seen else None
                cols, scores[rows] = top_k_shared(s, width, masked, keys[rows], self.item_keys_)
                found = self.items_.ids[np.maximum(cols, 0)].astype(object)
                found[cols < 0] = None
                ids[rows] = found
        dense = np.flatnonzero(~by_order)
        step = recommend_chunk_rows(len(self.items_))
        for start in range(0, len(dense), step):
            rows = dense[start : start + step]
            s = np.array(self.score_all(uidx[rows]), dtype=np.float32)
            ids[rows], scores[rows] = self._rank(
                s, seen[rows], k, exclude_seen, allowed, keys[rows]
            )
        return ids, scores

    def recommend_for_history(
        self,
        items: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        user: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a history the model never trained on (a new user, or a user whose
        history just changed). `weights` default to 1 per event; unknown item ids are
        ignored; an empty history gives popularity order. `user` (when the history is a known
        person's) keys the tie rule, so ties break as in `recommend`. Returns 1-D (ids,
        scores)."""
        s, h = self.score_histories([items], [weights])
        allowed = self._candidate_mask(candidates)
        ids, scores = self._rank(s, h, k, exclude_seen, allowed, history_user_keys(user))
        return ids[0], scores[0]

    def score_histories(
        self,
        histories: Sequence[Sequence[str]],
        weights: Sequence[Sequence[float] | None] | None = None,
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        """Scores of every item after each of several ad-hoc histories, in one pass (float32
        ``(len(histories), n_items)``), and the histories as a CSR of event weights (the
        seen items that `recommend_for_history` excludes). Each history's row is what
        `recommend_for_history` ranks; a batched pass may round differently from a single
        one in the last bits (BLAS kernels differ with the batch size)."""
        self._check_fitted()
        if weights is None:
            weights = [None] * len(histories)
        h = self._histories_matrix(histories, weights)
        return self._score_history_matrix(histories, h), h

    def _score_history_matrix(
        self, histories: Sequence[Sequence[str]], h: sp.csr_matrix
    ) -> np.ndarray:
        """Scores after `histories`, given also as the CSR `h` (order-free models read `h`)."""
        return np.array(self.score_history(h), dtype=np.float32)

    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Scores of (user, item) pairs given as two equal-length id sequences."""
        self._check_fitted()
        if len(users) != len(items):
            raise InputError(f"score: {len(users)} users but {len(items)} items; expected pairs")
        return self._score_pairs(self._user_idx(users), self._item_idx(items))

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(user_idx), dtype=np.float32)
        uniq, inverse = np.unique(user_idx, return_inverse=True)
        rows = recommend_chunk_rows(len(self.items_))
        for start in range(0, len(uniq), rows):
            sel = np.flatnonzero((inverse >= start) & (inverse < start + rows))
            block = self.score_all(uniq[start : start + rows])
            out[sel] = block[inverse[sel] - start, item_idx[sel]]
        return out

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``arrays.npz`` (no pickle) into directory `path`."""
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "user_ids": np.asarray(self.users_.ids, dtype=str),
            "item_ids": np.asarray(self.items_.ids, dtype=str),
        }
        _put_sparse(arrays, "seen_", self.seen_)
        for key in self._state:
            value = getattr(self, key)
            if sp.issparse(value):
                _put_sparse(arrays, key, value)
            else:
                arrays[key] = np.asarray(value)
        config = {
            "name": self.name,
            "params": self.get_params(),
            "format_version": FORMAT_VERSION,
            "recsight_version": __version__,
        }
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        np.savez(out / "arrays.npz", **arrays)
        return out

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by `save`; the class must match the saved name (use
        `recsight.models.load_model` to dispatch on it)."""
        config = read_config(path)
        if config["name"] != getattr(cls, "name", None) and cls is not Recommender:
            raise InputError(f"{path}: holds a {config['name']!r} model, not {cls.name!r}")
        if cls is Recommender:
            from recsight.models.registry import model_class

            cls = model_class(config["name"])
        model = cls(**config["params"])
        with np.load(Path(path) / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        model.users_ = IdIndex(arrays["user_ids"].astype(object), known_unique=True)
        model.items_ = IdIndex(arrays["item_ids"].astype(object), known_unique=True)
        model.seen_ = _get_sparse(arrays, "seen_")
        for key in cls._state:
            if key not in arrays and f"{key}__indptr" not in arrays and hasattr(cls, key):
                continue  # state added after the model was saved: the class default applies
            if f"{key}__indptr" in arrays:
                setattr(model, key, _get_sparse(arrays, key))
            else:
                value = arrays[key]
                setattr(model, key, value.item() if value.ndim == 0 else value)
        model._derive()
        return model


def _known_indices(index: IdIndex, ids: Sequence[str], kind: str) -> np.ndarray:
    """Indices of `ids` in `index`; unknown ids raise `InputError` naming up to five."""
    idx = index.index_of(ids, missing="ignore")
    if (idx < 0).any():
        unknown = [str(x) for x, i in zip(ids, idx, strict=True) if i < 0][:5]
        raise InputError(f"unknown {kind} id(s) for this model: {', '.join(unknown)}")
    return idx


def history_user_keys(user: str | None) -> np.ndarray:
    """Tie-rule key of an ad-hoc history: its user's id, or the empty id when anonymous."""
    return id_keys(["" if user is None else user])


def read_config(path: str | Path) -> dict[str, Any]:
    """A saved model's ``config.json``, checked for the format version."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file() or not (Path(path) / "arrays.npz").is_file():
        raise InputError(f"{path}: not a saved model (expected config.json and arrays.npz)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg_path}: not valid JSON ({exc})") from None
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{cfg_path}: model format version {version} (saved by recsight "
            f"{config.get('recsight_version', '?')}); this recsight reads version "
            f"{FORMAT_VERSION} only — retrain the model"
        )
    return config


def _put_sparse(arrays: dict[str, np.ndarray], key: str, m: sp.spmatrix) -> None:
    m = m.tocsr()
    arrays[f"{key}__data"] = m.data
    arrays[f"{key}__indices"] = m.indices
    arrays[f"{key}__indptr"] = m.indptr
    arrays[f"{key}__shape"] = np.asarray(m.shape, dtype=np.int64)


def _get_sparse(arrays: dict[str, np.ndarray], key: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{key}__shape"])
    return sp.csr_matrix(
        (arrays[f"{key}__data"], arrays[f"{key}__indices"], arrays[f"{key}__indptr"]),
        shape=shape,
    )
