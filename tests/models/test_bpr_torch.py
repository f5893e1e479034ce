"""`bpr` with backend="torch": recsight's own PyTorch BPR beside the wrapped implicit one."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.errors import InputError
from recsight.models.als import BPR
from recsight.models.registry import load_model


@pytest.fixture(scope="module")
def torch_bpr(blocks):
    return BPR(backend="torch", factors=8, iterations=40, batch_size=64, num_threads=1).fit(blocks)


def test_torch_bpr_learns_the_planted_blocks_and_ranks_positives_first(torch_bpr, blocks):
    ids, _ = torch_bpr.recommend(blocks.users.ids, k=3)
    own = [int(i[1:]) // 15 == (u >= 20) for u, row in enumerate(ids) for i in row]
    assert np.mean(own) == 1.0
    # training AUC: seen items above unseen ones for (nearly) every pair
    scores = torch_bpr.score_all(np.arange(blocks.n_users))
    seen = torch_bpr.seen_.toarray() > 0
    aucs = [
        (scores[u][seen[u]][:, None] > scores[u][~seen[u]][None, :]).mean()
        for u in range(blocks.n_users)
    ]
    assert np.mean(aucs) > 0.75
    losses = [e.loss for e in torch_bpr.history_.epochs]
    assert losses[-1] < 0.6 * losses[0]


def test_torch_bpr_round_trips_and_keeps_its_backend(torch_bpr, tmp_path):
    torch_bpr.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.get_params()["backend"] == "torch"
    users = np.arange(5)
    np.testing.assert_array_equal(loaded.score_all(users), torch_bpr.score_all(users))
    # the item bias is the last factor, against a constant 1 on the user side
    assert (torch_bpr.user_factors_[:, -1] == 1.0).all()


def test_torch_bpr_is_seeded(blocks, torch_bpr):
    again = BPR(backend="torch", factors=8, iterations=40, batch_size=64, num_threads=1)
    np.testing.assert_array_equal(again.fit(blocks).item_factors_, torch_bpr.item_factors_)


def test_unknown_backend_is_an_input_error(blocks):
    with pytest.raises(InputError, match="backend"):
        BPR(backend="cornac").fit(blocks)
