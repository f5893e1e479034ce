"""Removing erased users from trained models: their own state, and where the math allows, their
influence on the item side (exact unlearning).

Every model loses the users' ids, `seen_` rows and per-user state (`Recommender.drop_users`).
Closed-form models are then brought to exactly what a refit without the users gives:

- popularity (no time decay): each item's count is decremented by the users' items;
- EASE: P = (X^T X + Lambda)^-1 is downdated by the users' rows with the Woodbury identity
  when the model kept P (`keep_inverse=True`), otherwise re-solved from the remaining rows;
- item-kNN: the neighbour lists that can change (the users' items and every item that
  co-occurs with them) are recomputed from the remaining rows;
- user-kNN: the users leave every neighbour list, and the lists that held them are recomputed
  (all lists under ``adjusted`` similarity, whose item means the users shifted);
- content: its item embeddings come from text only, so dropping the users' profiles is exact.

Other models (ALS, BPR, MF, SASRec, ...) keep item-side state learned partly from the users:
they are marked "trained on data that included erased users" until retrained
(`recsight forget --retrain`). Pair models (NeuMF, DeepFM, the seed MLP) lose the users' rows
of their network's per-user parameters at once and are marked the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.base import Recommender
from recsight.models.ease import EASE, ease_inverse, weights_from_inverse
from recsight.models.knn import ItemKNN, UserKNN
from recsight.models.manifest import MANIFEST, read_manifest, write_manifest
from recsight.models.popular import MostPopular
from recsight.models.registry import create_model, load_model

NOT_UNLEARNED = "trained on data that included erased users"
EXACT = "exact unlearning"


@dataclass
class ModelUnlearning:
    """What forgetting did to one saved model."""

    path: str
    model: str
    users_removed: int
    exact: bool
    status: str  # EXACT, NOT_UNLEARNED, "retrained" or "unchanged"


# -- item-side updates, per model -------------------------------------------------------------


def _popular(model: MostPopular, removed: sp.csr_matrix) -> bool:
    if model.half_life_days is not None:
        return False  # decayed counts need the events' ages, which the model does not keep
    model.popularity_ = (model.popularity_ - np.diff(removed.tocsc().indptr)).astype(np.float32)
    return True


def _ease(model: EASE, removed: sp.csr_matrix) -> bool:
    reg, reg_pop = float(model.reg), float(model.reg_popularity)
    if model.inverse_.size == 0:
        p = ease_inverse(model.seen_, reg, reg_pop)
    else:
        p = woodbury_downdate(model.inverse_, removed.astype(np.float64), reg_pop)
        model.inverse_ = p
    model.item_weights_ = weights_from_inverse(p)
    return True


def woodbury_downdate(p: np.ndarray, u: sp.csr_matrix, reg_popularity: float) -> np.ndarray:
    """(A - W^T W)^-1 from P = A^-1, where A = X^T X + Lambda and `u` holds the rows leaving
    X. W stacks `u` and, when Lambda has the ``reg_popularity * diag(X^T X)`` term, one row per
    touched item for that term's decrease. Costs O(n^2 r) for r rows instead of O(n^3)."""
    cols = np.unique(u.indices)
    w = u[:, cols].toarray()
    if reg_popularity > 0:
        w = np.vstack([w, np.diag(np.sqrt(reg_popularity * (w**2).sum(axis=0)))])
    q = p[:, cols] @ w.T  # P W^T, n x r
    m = np.eye(w.shape[0]) - w @ q[cols]  # I - W P W^T
    return p + q @ np.linalg.solve(m, q.T)


def _itemknn(model: ItemKNN, removed: sp.csr_matrix) -> bool:
    if model.capped_ is None:  # saved before the model kept what `max_user_items` left out
        cap = model.max_user_items
        model.capped_ = sp.csr_matrix(model.seen_.shape, dtype=np.float32)
        if cap is not None and (np.diff(model.seen_.indptr) > int(cap)).any():
            return False  # which entries the cap left out is unknown: retrain
    touched = np.unique(removed.indices)
    x = model.seen_.tocsc()
    users = np.unique(x[:, touched].indices)
    affected = np.union1d(touched, np.unique(model.seen_[users].indices))
    sim = model.similarity_.tolil()
    if len(affected):
        fresh = model.neighbour_lists(affected).tolil()
        for pos, item in enumerate(affected):
            sim.rows[item], sim.data[item] = fresh.rows[pos], fresh.data[pos]
    model.similarity_ = sim.tocsr()
    model.similarity_.sort_indices()
    model._derive()
    return True


def _userknn(model: UserKNN, removed_rows: np.ndarray, keep: np.ndarray) -> bool:
    kept = np.flatnonzero(keep)
    old = model.similarity_.tocsc()
    held = np.unique(old[:, removed_rows].indices)  # users whose lists held an erased user
    sim = model.similarity_[kept][:, kept].tolil()
    if model.similarity == "adjusted":
        redo = np.arange(len(kept))  # item means moved: every similarity changes
    else:
        redo = np.flatnonzero(np.isin(kept, held))
    if len(redo):
        fresh = model._neighbours(model.seen_[redo]).tolil()
        for pos, row in enumerate(redo):
            sim.rows[row], sim.data[row] = fresh.rows[pos], fresh.data[pos]
    model.similarity_ = sim.tocsr()
    model.similarity_.sort_indices()
    return True


def _content(model: Recommender, removed: sp.csr_matrix) -> bool:
    return True  # item embeddings come from item text alone


_ITEM_SIDE: dict[str, Callable[[Any, sp.csr_matrix], bool]] = {
    "popular": _popular,
    "ease": _ease,
    "itemknn": _itemknn,
    "content": _content,
}


def forget_in_model(model: Recommender, stored_ids: Sequence[str]) -> tuple[int, bool]:
    """Remove the users (stored ids) from a fitted model in place. Returns (users removed,
    whether the result equals a refit without them)."""
    rows = model.users_.index_of(list(stored_ids), missing="ignore")
    rows = np.unique(rows[rows >= 0])
    if not len(rows):
        return 0, True
    keep = np.ones(len(model.users_), dtype=bool)
    keep[rows] = False
    removed = model.seen_[rows]
    similarity = model.similarity_ if isinstance(model, UserKNN) else None
    model.drop_users(keep)
    if isinstance(model, UserKNN):
        model.similarity_ = similarity  # still over the old users: `_userknn` cuts it
        return len(rows), _userknn(model, rows, keep)
    update = _ITEM_SIDE.get(model.name)
    exact = bool(update(model, removed)) if update is not None else False
    return len(rows), exact


# -- saved models and pipelines ------------------------------------------------------------


def model_dirs(folder: str | Path) -> list[Path]:
    """The saved-model directories of a pipeline folder (main, then fallbacks), or the
    folder itself when it is a bare model."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest and "main" in manifest:
        subs = [manifest["main"], *manifest.get("fallbacks", [])]
        return [(folder / s).resolve() if s != "." else folder for s in subs]
    return [folder]


def pending_retrain(manifest: dict[str, Any]) -> int:
    """How many erased users the folder's models were trained on and still carry."""
    return int((manifest.get("erasures") or {}).get("pending_retrain", 0))


def forget_in_folder(
    folder: str | Path,
    stored_ids: Sequence[str],
    retrain: Interactions | None = None,
    models: Sequence[Recommender] | None = None,
) -> list[ModelUnlearning]:
    """Forget the users in every model of a saved pipeline or model folder, save them back and
    record the outcome in the folder's manifest (``erasures``). `retrain`, when given, is the
    store's data after the erasure: models that cannot unlearn exactly are refit on it with
    their saved hyperparameters. `models`, when given, are the folder's models already loaded
    (the service's pipeline), changed in place instead of loaded again."""
    folder = Path(folder)
    dirs = model_dirs(folder)
    if not (dirs[0] / "config.json").is_file():
        raise InputError(f"{folder}: not a saved model or pipeline folder")
    loaded = list(models) if models is not None else [load_model(d) for d in dirs]
    manifest = read_manifest(folder)
    erasures = manifest.get("erasures") or {"unlearned_users": 0, "pending_retrain": 0,
                                            "models": {}}  # fmt: skip
    results = []
    pending = 0
    for d, model in zip(dirs, loaded, strict=True):
        key = "." if d == folder else d.name
        n, exact = forget_in_model(model, stored_ids)
        status = "unchanged" if n == 0 else (EXACT if exact else NOT_UNLEARNED)
        if retrain is not None and (not exact or erasures["models"].get(key) == NOT_UNLEARNED):
            model = create_model(model.name, **model.get_params()).fit(retrain)
            status, exact = "retrained", True
        if n or status == "retrained":
            model.save(d)
        if status == NOT_UNLEARNED:
            pending = max(pending, n)
        if status != "unchanged":
            erasures["models"][key] = "retrained" if status == "retrained" else status
        results.append(ModelUnlearning(str(d), model.name, n, exact, status))
    erasures["unlearned_users"] = int(erasures.get("unlearned_users", 0)) + max(
        (r.users_removed for r in results), default=0
    )
    if retrain is not None:
        erasures["pending_retrain"] = 0
    else:
        erasures["pending_retrain"] = int(erasures.get("pending_retrain", 0)) + pending
    if not manifest:  # a bare saved model: give it the manifest `recsight train` writes
        write_manifest(folder, ".")
        manifest = read_manifest(folder)
    manifest["erasures"] = erasures
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return results


def results_dict(results: Sequence[ModelUnlearning]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
