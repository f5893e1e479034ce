"""Evaluation: pure metrics (`metrics`), full-ranking and rating protocols (`protocol`),
paired significance tests and bootstrap CIs (`significance`), YAML experiments
(`experiment`) and their leaderboard outputs (`leaderboard`).

The experiment runner is imported from `recsight.evaluation.experiment` itself, not from
here: it reads stores and YAML, which importing the metrics must not pull in."""

from recsight.evaluation.leaderboard import Leaderboard, build_leaderboard
from recsight.evaluation.protocol import (
    RankingResult,
    RatingResult,
    evaluate_ranking,
    evaluate_rating,
)
from recsight.evaluation.significance import bootstrap_ci, compare_to_best, holm, paired_pvalue

__all__ = [
    "Leaderboard",
    "RankingResult",
    "RatingResult",
    "bootstrap_ci",
    "build_leaderboard",
    "compare_to_best",
    "evaluate_ranking",
    "evaluate_rating",
    "holm",
    "paired_pvalue",
]
