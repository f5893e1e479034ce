"""DLAE and EDLAE (Steck 2020) against hand-computed weights, EASE, ridge regression and
dropout training itself."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.errors import InputError
from recsight.models import EASE
from recsight.models.linear import DLAE, EDLAE
from tests.models.conftest import make_interactions


def data_of(x: np.ndarray):
    u, i = np.nonzero(x)
    return make_interactions(u, i, n_users=x.shape[0], n_items=x.shape[1])


def random_matrix(seed: int = 3, shape: tuple[int, int] = (30, 12)) -> np.ndarray:
    x = (np.random.default_rng(seed).random(shape) < 0.3).astype(np.float64)
    x[0] = 1.0  # every item has an event
    return x


# X = [[1,1],[1,0],[1,0],[0,1]]: G = [[3,1],[1,2]]; p = 0.5, reg = 1 -> Lambda = diag(4, 3),
# G + Lambda = [[7,1],[1,5]], P = [[5,-1],[-1,7]] / 34.
HAND_X = np.array([[1, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float64)


def test_dlae_matches_the_hand_computed_solution():
    m = DLAE(dropout=0.5, reg=1.0).fit(data_of(HAND_X))
    # B = P G = [[14, 3], [4, 13]] / 34 (= I - P Lambda)
    np.testing.assert_allclose(m.item_weights_, np.array([[14, 3], [4, 13]]) / 34, atol=1e-6)
    # user 1 ([1, 0]) scores item 1 with B_01 = 3/34
    assert m.score_all(np.array([1]))[0, 1] == pytest.approx(3 / 34, rel=1e-5)


def test_edlae_matches_the_hand_computed_solution():
    m = EDLAE(dropout=0.5, reg=1.0).fit(data_of(HAND_X))
    # B_ij = -P_ij / P_jj: B_01 = 1/7, B_10 = 1/5, zero diagonal
    np.testing.assert_allclose(m.item_weights_, np.array([[0, 1 / 7], [1 / 5, 0]]), atol=1e-6)
    # EASE with the same reg (Lambda = I, P = [[3,-1],[-1,4]] / 11) differs: B_01 = 1/4
    ease = EASE(reg=1.0).fit(data_of(HAND_X))
    assert ease.item_weights_[0, 1] == pytest.approx(1 / 4, rel=1e-5)


def test_edlae_without_dropout_is_ease():
    data = data_of(random_matrix())
    for reg in (0.5, 5.0, 50.0):
        np.testing.assert_allclose(
            EDLAE(dropout=0.0, reg=reg).fit(data).item_weights_,
            EASE(reg=reg).fit(data).item_weights_,
            atol=1e-6,
        )
    # and dropout makes a difference
    assert not np.allclose(
        EDLAE(dropout=0.5, reg=5.0).fit(data).item_weights_,
        EASE(reg=5.0).fit(data).item_weights_,
        atol=1e-3,
    )


def test_dlae_without_dropout_is_ridge_regression():
    x = random_matrix()
    g = x.T @ x
    reg = 5.0
    b = DLAE(dropout=0.0, reg=reg).fit(data_of(x)).item_weights_
    np.testing.assert_allclose(b, np.linalg.solve(g + reg * np.eye(12), g), atol=1e-5)
    np.testing.assert_allclose(b, np.eye(12) - reg * np.linalg.inv(g + reg * np.eye(12)), atol=1e-5)


def test_dlae_is_what_dropout_training_converges_to():
    """Least squares on many dropout-corrupted copies of X (inverted dropout: kept entries
    scaled by 1/(1-p)) plus the L2 term approaches DLAE's closed form."""
    x = random_matrix(seed=5, shape=(20, 6))
    p, reg, copies = 0.4, 2.0, 4000
    rng = np.random.default_rng(0)
    z = np.concatenate([x * (rng.random(x.shape) >= p) / (1 - p) for _ in range(copies)])
    target = np.tile(x, (copies, 1))
    # averaged over the copies: min ||X - Z B||^2 / copies + reg ||B||^2
    empirical = np.linalg.solve(z.T @ z / copies + reg * np.eye(6), z.T @ target / copies)
    b = DLAE(dropout=p, reg=reg).fit(data_of(x)).item_weights_
    np.testing.assert_allclose(b, empirical, atol=0.02)
    # the same Monte Carlo solution is far from the un-denoised ridge solution
    g = x.T @ x
    assert np.abs(np.linalg.solve(g + reg * np.eye(6), g) - empirical).max() > 0.1


@pytest.mark.parametrize("cls", [DLAE, EDLAE])
def test_bad_hyperparameters_are_refused(cls):
    data = data_of(HAND_X)
    with pytest.raises(InputError, match="dropout must be in"):
        cls(dropout=1.0).fit(data)
    with pytest.raises(InputError, match="reg must be"):
        cls(dropout=0.0, reg=0.0).fit(data)
    with pytest.raises(InputError, match="reg must be"):
        cls(reg=-1.0).fit(data)


@pytest.mark.parametrize(("cls", "label"), [(DLAE, "DLAE"), (EDLAE, "EDLAE")])
def test_refuses_a_catalog_that_cannot_fit(monkeypatch, cls, label):
    import psutil

    class Mem:
        available = 100  # bytes: less than four 2 x 2 float64 matrices (128 B)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem())
    with pytest.raises(InputError, match=rf"{label} needs about .* for 2 items"):
        cls().fit(data_of(HAND_X))
