"""The protocol and the example experiments against real data and real models."""

from pathlib import Path

import numpy as np
import pytest
from conftest import need

from recsight.data.ingest import ingest
from recsight.data.splits import split
from recsight.data.store import Store
from recsight.evaluation import metrics as M
from recsight.evaluation.experiment import load_experiment
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.registry import MODELS, create_model, model_class
from recsight.models.topk import id_keys, tie_keys

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "experiments"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_experiments_validate(path):
    cfg, _ = load_experiment(path)
    for m in cfg.models:
        assert m.name in MODELS
        names = set(m.params) | set(m.grid) | set(m.search)
        assert names <= set(model_class(m.name).param_names()), m.name


def test_full_ranking_on_ml100k_matches_per_user_loop(tmp_path, data_dir):
    need(data_dir / "ml-100k" / "u.data")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, data_dir / "ml-100k")
        data = store.interactions(with_features=False)
    parts = split(data, "user_random:0.8", seed=42)
    model = create_model("itemknn", neighbors=50).fit(parts.train)
    res = evaluate_ranking(model, parts.train, parts.test, ks=(10,), batch_users=200)
    assert len(res.users) == 943 and res.protocol == "full ranking"
    seen = parts.train.to_csr(binary=True)
    truth = parts.test.to_csr(binary=True)
    for row, u in enumerate(res.users[:40]):
        s = model.score_all(np.array([u]))[0].astype(np.float64)
        s[seen[u].indices] = -np.inf
        keys = tie_keys(id_keys([parts.train.users.ids[u]])[0], id_keys(parts.train.items.ids))
        ranked = np.lexsort((keys, -s))[:10]  # the documented tie rule, by full sort
        rel = set(truth[u].indices)
        hits = np.array([[i in rel for i in ranked]])
        expected = M.ndcg_at_k(hits, np.array([len(rel)]), 10)[0]
        assert res.per_user["ndcg@10"][row] == pytest.approx(expected, abs=1e-9)
    assert 0.2 < res.summary["ndcg@10"] < 0.6
