import numpy as np
import pytest
from scipy import stats

from recsight.errors import InputError
from recsight.evaluation.significance import bootstrap_ci, compare_to_best, holm, paired_pvalue


def test_holm_hand_computed():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_paired_pvalue_agrees_with_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + rng.normal(0.05, 0.1, 200)
    assert paired_pvalue(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert paired_pvalue(a, b, "ttest") == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_pvalue(a, a) == 1.0
    with pytest.raises(InputError):
        paired_pvalue(a, b, "anova")


def test_compare_to_best_marks_only_clearly_worse():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    per_model = {
        "good": base + 0.2,
        "tie": base + 0.2 + rng.normal(0, 1e-3, 300),
        "bad": base,
    }
    best, comp = compare_to_best(per_model)
    assert best in ("good", "tie")
    assert comp["bad"].worse and comp["bad"].p_adjusted < 0.05
    other = "tie" if best == "good" else "good"
    assert not comp[other].worse
    best_low, comp_low = compare_to_best(per_model, higher_is_better=False)
    assert best_low == "bad" and comp_low["good"].worse


def test_bootstrap_ci_brackets_mean_and_weighted_matches_event_mean():
    rng = np.random.default_rng(2)
    v = rng.normal(1.0, 1.0, 2000)
    lo, hi = bootstrap_ci(v, n_boot=500, seed=0)
    assert lo < v.mean() < hi
    se = v.std() / np.sqrt(len(v))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    per_user_mse = np.array([1.0, 4.0, 9.0])
    counts = np.array([1.0, 1.0, 2.0])
    lo, hi = bootstrap_ci(per_user_mse, counts, n_boot=2000, transform=np.sqrt)
    event_rmse = np.sqrt((1 + 4 + 18) / 4)
    assert lo <= event_rmse <= hi
    assert np.isnan(bootstrap_ci(np.zeros(0))).all()


def test_paired_tests_refuse_arrays_of_different_users():
    """Same length, different users (or order): a paired test would compare different
    people's values; it must refuse instead of returning a p-value."""
    from recsight.errors import InputError
    from recsight.evaluation.leaderboard import ModelRun, build_leaderboard
    from recsight.evaluation.protocol import RankingResult

    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    users = np.arange(50)
    assert 0 <= paired_pvalue(a, b, users_a=users, users_b=users.copy()) <= 1
    with pytest.raises(InputError, match="different users.*position 0"):
        paired_pvalue(a, b, users_a=users, users_b=users[::-1])
    with pytest.raises(InputError, match="x and y were evaluated on different users"):
        compare_to_best({"x": a, "y": b}, users={"x": users, "y": users + 1})

    def result(values, users):  # noqa: ANN001, ANN202
        return RankingResult("full ranking", (10,), users, {"ndcg@10": values},
                             {"ndcg@10": float(values.mean())}, 100, 0, 0.0)  # fmt: skip

    runs = [ModelRun("x", "x", {}, result(a, users), 0, 0),
            ModelRun("y", "y", {}, result(b, users + 50), 0, 0)]  # fmt: skip
    with pytest.raises(InputError, match="different users"):
        build_leaderboard("t", "ranking", runs, n_boot=0)
