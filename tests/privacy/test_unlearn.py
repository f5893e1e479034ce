"""Exact unlearning: a model that forgot users equals the same model refit without them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.errors import InputError
from recsight.models.registry import create_model, load_model
from recsight.privacy.erasure import erase_users
from recsight.privacy.unlearn import (
    EXACT,
    NOT_UNLEARNED,
    forget_in_folder,
    forget_in_model,
    woodbury_downdate,
)
from tests.privacy.helpers import files_holding
from tests.privacy.test_erasure import WHO, build_store

ERASED = ["u7", "u19", "u42"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(data before, data after erasing ERASED from the store)."""
    root = tmp_path_factory.mktemp("unlearn")
    shop = generate_shop(root / "shop", n_users=120, n_items=60, n_days=15, seed=3)
    with Store(root / "s.duckdb") as s:
        ingest(s, shop.out_dir)
        before = s.interactions(with_features=False)
        erase_users(s, ERASED)
        after = s.interactions(with_features=False)
    return before, after


def _same_sparse(a: sp.spmatrix, b: sp.spmatrix, atol: float = 0.0) -> None:
    assert a.shape == b.shape
    diff = abs(a.tocsr() - b.tocsr())
    assert (diff.max() if diff.nnz else 0.0) <= atol


def _check_common(unlearned, refit) -> None:
    assert list(unlearned.users_.ids) == list(refit.users_.ids)
    assert not set(ERASED) & set(unlearned.users_.ids)
    assert list(unlearned.items_.ids) == list(refit.items_.ids)
    _same_sparse(unlearned.seen_, refit.seen_)
    np.testing.assert_array_equal(unlearned.item_popularity_, refit.item_popularity_)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("popular", {}),
        ("ease", {"reg": 50.0}),
        ("ease", {"reg": 50.0, "keep_inverse": True}),
        ("ease", {"reg": 20.0, "reg_popularity": 0.3, "keep_inverse": True}),
        ("itemknn", {"neighbors": 10}),
        ("itemknn", {"neighbors": 5, "similarity": "pearson", "shrinkage": 3.0}),
        ("itemknn", {"neighbors": 8, "similarity": "adjusted"}),
        ("itemknn", {"neighbors": 8, "max_user_items": 4}),  # the recency cap at work
        ("userknn", {"neighbors": 6}),
        ("userknn", {"neighbors": 6, "similarity": "adjusted"}),
    ],
)
def test_unlearned_equals_retrained(stores, name, params, tmp_path):
    before, after = stores
    model = create_model(name, **params).fit(before)
    model.save(tmp_path / "m")  # through save/load, as `recsight forget` sees it
    model = load_model(tmp_path / "m")
    n, exact = forget_in_model(model, [*ERASED, "never-seen"])
    assert (n, exact) == (3, True)
    refit = create_model(name, **params).fit(after)
    _check_common(model, refit)
    users = list(refit.users_.ids[:40])
    if name == "popular":
        np.testing.assert_allclose(model.popularity_, refit.popularity_)
        # a hand count: the erased users' items lost one user each
        pop_before = create_model(name).fit(before).popularity_
        cols = before.to_csr()[before.users.index_of(ERASED)]
        np.testing.assert_array_equal(pop_before - np.diff(cols.tocsc().indptr), model.popularity_)
    elif name == "ease":
        np.testing.assert_allclose(model.item_weights_, refit.item_weights_, atol=2e-6)
        if params.get("keep_inverse"):
            np.testing.assert_allclose(model.inverse_, refit.inverse_, rtol=1e-9, atol=1e-12)
        assert not np.allclose(model.item_weights_, create_model(name, **params).fit(before)
                               .item_weights_, atol=2e-6)  # fmt: skip
    else:
        _same_sparse(model.similarity_, refit.similarity_, atol=1e-6)
    np.testing.assert_allclose(model.score_all(np.arange(40)), refit.score_all(np.arange(40)),
                               atol=1e-5)  # fmt: skip
    ids_a, _ = model.recommend(users, k=5)
    ids_b, _ = refit.recommend(users, k=5)
    assert (ids_a == ids_b).mean() > 0.99


def test_userknn_neighbour_lists_cleaned(stores):
    before, _ = stores
    model = create_model("userknn", neighbors=6).fit(before)
    erased = before.users.index_of(ERASED)
    holders = np.unique(model.similarity_.tocsc()[:, erased].indices)
    assert len(set(holders) - set(erased)) > 0  # other users had them as neighbours
    forget_in_model(model, ERASED)
    assert model.similarity_.shape == (len(model.users_), len(model.users_))
    # every list is full again (no hole where an erased user was)
    assert (np.diff(model.similarity_.indptr) == 6).all()


def test_woodbury_downdate_matches_inverse():
    rng = np.random.default_rng(0)
    x = sp.random(30, 12, density=0.3, random_state=1, format="csr")
    x.data[:] = 1.0
    lam = 2.0 * np.eye(12) + 0.5 * np.diag((x.T @ x).diagonal())
    p = np.linalg.inv((x.T @ x).toarray() + lam)
    u = x[[3, 17]]
    rest = x[np.setdiff1d(np.arange(30), [3, 17])]
    lam2 = 2.0 * np.eye(12) + 0.5 * np.diag((rest.T @ rest).diagonal())
    want = np.linalg.inv((rest.T @ rest).toarray() + lam2)
    np.testing.assert_allclose(woodbury_downdate(p, u, 0.5), want, rtol=1e-10)
    assert rng is not None


def test_not_exact_models_marked_and_retrained(stores, tmp_path):
    before, after = stores
    folder = tmp_path / "als"
    create_model("als", factors=4, iterations=2).fit(before).save(folder)
    res = forget_in_folder(folder, ERASED)
    assert [(r.users_removed, r.exact, r.status) for r in res] == [(3, False, NOT_UNLEARNED)]
    manifest = (folder / "manifest.json").read_text()
    assert NOT_UNLEARNED in manifest and '"pending_retrain": 3' in manifest
    saved = load_model(folder)
    assert not set(ERASED) & set(saved.users_.ids)
    assert saved.user_factors_.shape[0] == len(saved.users_) == len(before.users) - 3
    res = forget_in_folder(folder, [], retrain=after)
    assert res[0].status == "retrained"
    assert '"pending_retrain": 0' in (folder / "manifest.json").read_text()


PAIR_MODELS = {
    "neumf": {"dim": 4, "mlp_dim": 4, "hidden": (8,)},
    "deepfm": {"dim": 4, "hidden": (8,)},  # user features and time context included
    "seed_mlp": {"hidden": 8},
}


@pytest.fixture(scope="module")
def shop_with_who(tmp_path_factory):
    """The erasure tests' store (a generated shop plus the distinctive user WHO)."""
    db = build_store(tmp_path_factory.mktemp("pair"))
    with Store(db, read_only=True) as s:
        return s.interactions()


@pytest.mark.parametrize("name", PAIR_MODELS)
def test_pair_models_drop_user_rows_at_once(shop_with_who, name, tmp_path):
    data = shop_with_who
    folder = tmp_path / name
    params = {"epochs": 2, "early_stopping": False, **PAIR_MODELS[name]}
    create_model(name, **params).fit(data).save(folder)
    assert files_holding([folder], WHO)
    loaded, ref = load_model(folder), load_model(folder)
    gone = [WHO, "u3"]  # u3 sits mid-table: the rows (and codes) after it move up
    res = forget_in_folder(folder, gone, models=[loaded])  # the service's loaded pipeline
    assert [(r.users_removed, r.exact, r.status) for r in res] == [(2, False, NOT_UNLEARNED)]
    assert files_holding([folder], WHO) == []
    assert json.loads((folder / "manifest.json").read_text())["erasures"]["pending_retrain"] == 2
    rest = [u for u in ref.users_.ids if u not in gone]
    n = len(rest)
    for model in (loaded, load_model(folder)):
        assert list(model.users_.ids) == rest and model.seen_.shape[0] == n
        assert model.dims_[0] == n
        # the remaining users score exactly as before: the rest of the network is kept
        np.testing.assert_array_equal(
            model.score_all(model._user_idx(rest)), ref.score_all(ref._user_idx(rest))
        )
        with pytest.raises(InputError, match="unknown user"):
            model.recommend([WHO])  # a cold start now: only its history can place it
    if name == "neumf":
        assert loaded.net.user.weight.shape[0] == n
    elif name == "deepfm":
        assert loaded.net.emb.weight.shape[0] == ref.net.emb.weight.shape[0] - 2
        assert loaded.user_codes_.shape[0] == loaded.user_context_.shape[0] == n
        assert loaded.user_codes_.shape[1] > 1  # side features were encoded too
    else:
        assert loaded.user_numbers_.shape == (n,)


def test_exact_folder_status(stores, tmp_path):
    before, _ = stores
    folder = tmp_path / "knn"
    create_model("itemknn").fit(before).save(folder)
    res = forget_in_folder(folder, ["u7"])
    assert res[0].status == EXACT
    assert '"pending_retrain": 0' in (folder / "manifest.json").read_text()
