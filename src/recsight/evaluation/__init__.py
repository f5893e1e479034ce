"""Evaluation: pure metrics (`metrics`), full-ranking and rating protocols (`protocol`),
paired significance tests and bootstrap CIs (`significance`), YAML experiments
(`experiment`) and their leaderboard outputs (`leaderboard`)."""

from recsight.evaluation.experiment import ExperimentConfig, load_experiment, run_experiment
from recsight.evaluation.leaderboard import Leaderboard, build_leaderboard
from recsight.evaluation.protocol import (
    RankingResult,
    RatingResult,
    evaluate_ranking,
    evaluate_rating,
)
from recsight.evaluation.significance import bootstrap_ci, compare_to_best, holm, paired_pvalue

__all__ = [
    "ExperimentConfig",
    "Leaderboard",
    "RankingResult",
    "RatingResult",
    "bootstrap_ci",
    "build_leaderboard",
    "compare_to_best",
    "evaluate_ranking",
    "evaluate_rating",
    "holm",
    "load_experiment",
    "paired_pvalue",
    "run_experiment",
]
