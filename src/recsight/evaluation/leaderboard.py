"""Leaderboard: per-model metrics with bootstrap CIs and significance marks, and its outputs
(a Rich table, ``leaderboard.json`` and a self-contained ``leaderboard.html`` with Plotly).

A cell is marked ``*`` when that model is significantly worse than the column's best model
(paired test over per-user values, Holm-corrected over the models compared). Only accuracy
metrics get marks; beyond-accuracy metrics (novelty, diversity, popularity, long-tail share,
coverage) describe a trade-off rather than a better/worse order.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from recsight.evaluation.protocol import ACCURACY_METRICS, RankingResult, RatingResult
from recsight.evaluation.significance import bootstrap_ci, compare_to_best

LOWER_IS_BETTER = {"rmse", "mse", "mae", "popularity"}


def metric_base(key: str) -> str:
    """``"ndcg@10"`` -> ``"ndcg"``."""
    return key.split("@", 1)[0]


def is_accuracy(key: str) -> bool:
    base = metric_base(key)
    return base in ACCURACY_METRICS or base in ("rmse", "mse", "mae")


@dataclass
class ModelRun:
    """Everything measured for one model in one experiment."""

    label: str
    name: str
    params: dict[str, Any]
    result: RankingResult | RatingResult
    fit_seconds: float
    eval_seconds: float
    tune_seconds: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MetricCell:
    mean: float
    ci: tuple[float, float] | None
    p_adjusted: float | None
    worse: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "ci95": None if self.ci is None else list(self.ci),
            "p_holm": self.p_adjusted,
            "significantly_worse": self.worse,
        }


@dataclass
class Leaderboard:
    """Rows of per-model cells; `columns` in display order, `best` = best model per column."""

    experiment: str
    task: str
    protocol: str
    columns: list[str]
    runs: list[ModelRun]
    cells: dict[str, dict[str, MetricCell]]  # label -> column -> cell
    best: dict[str, str]
    significance: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for run in self.runs:
            rows.append({
                "model": run.label,
                "name": run.name,
                "params": run.params,
                "fit_seconds": run.fit_seconds,
                "eval_seconds": run.eval_seconds,
                "tune_seconds": run.tune_seconds,
                "trials": run.trials,
                "n_users": int(len(run.result.users)),
                "metrics": {c: self.cells[run.label][c].to_dict() for c in self.columns},
            })  # fmt: skip
            if isinstance(run.result, RankingResult):
                rows[-1]["cold_users"] = {
                    "n_users": int(run.result.cold.sum()),
                    "metrics": run.result.group_summary(cold=True),
                }
        return {
            "experiment": self.experiment,
            "task": self.task,
            "protocol": self.protocol,
            "columns": self.columns,
            "best": self.best,
            "significance": self.significance,
            **self.context,
            "models": rows,
        }


def build_leaderboard(
    experiment: str,
    task: str,
    runs: list[ModelRun],
    test: str = "wilcoxon",
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    context: dict[str, Any] | None = None,
) -> Leaderboard:
    """Bootstrap CIs per model and metric, and marks where a model is significantly worse
    than the best (per-user arrays must be aligned: same test users for every model)."""
    if not runs:
        raise ValueError("no model runs to rank")
    first = runs[0].result
    if isinstance(first, RatingResult):
        columns = ["rmse", "mae", "mse"]
    else:
        columns = list(first.per_user) + [c for c in first.summary if c.startswith("coverage@")]
    cells: dict[str, dict[str, MetricCell]] = {r.label: {} for r in runs}
    best: dict[str, str] = {}
    for col in columns:
        arrays = {r.label: _per_user(r.result, col) for r in runs}
        comparison = None
        if is_accuracy(col) and len(runs) > 1 and all(a is not None for a in arrays.values()):
            best[col], comparison = compare_to_best(
                arrays, higher_is_better=metric_base(col) not in LOWER_IS_BETTER, test=test,
                alpha=alpha, users={r.label: r.result.users for r in runs},
            )  # fmt: skip
        elif is_accuracy(col):
            sign = -1.0 if metric_base(col) in LOWER_IS_BETTER else 1.0
            best[col] = max(runs, key=lambda r, c=col: sign * r.result.summary[c]).label
        for r in runs:
            cmp = None if comparison is None else comparison[r.label]
            cells[r.label][col] = MetricCell(
                mean=float(r.result.summary[col]),
                ci=_ci(r.result, col, n_boot, seed),
                p_adjusted=None if cmp is None else cmp.p_adjusted,
                worse=False if cmp is None else cmp.worse,
            )
    return Leaderboard(
        experiment=experiment,
        task=task,
        protocol=first.protocol,
        columns=columns,
        runs=runs,
        cells=cells,
        best=best,
        significance={"test": test, "correction": "holm", "alpha": alpha, "bootstrap": n_boot},
        context=context or {},
    )


def _per_user(result: RankingResult | RatingResult, col: str) -> np.ndarray | None:
    if isinstance(result, RatingResult):
        return result.per_user["mae" if col == "mae" else "mse"]
    return result.per_user.get(col)


def _ci(
    result: RankingResult | RatingResult, col: str, n_boot: int, seed: int
) -> tuple[float, float] | None:
    if n_boot <= 0:
        return None
    if isinstance(result, RatingResult):
        # event-level error, resampled by user: weights = test ratings per user
        values = result.per_user["mae" if col == "mae" else "mse"]
        transform = np.sqrt if col == "rmse" else None
        return bootstrap_ci(values, result.counts, n_boot, seed=seed, transform=transform)
    values = result.per_user.get(col)
    return None if values is None else bootstrap_ci(values, n_boot=n_boot, seed=seed)


# --- output -------------------------------------------------------------------------------


def _fmt(cell: MetricCell, digits: int = 4) -> str:
    text = f"{cell.mean:.{digits}f}"
    if cell.ci is not None:
        text += f" ±{(cell.ci[1] - cell.ci[0]) / 2:.{digits}f}"
    return text + ("*" if cell.worse else "")


def _groups(board: Leaderboard) -> list[tuple[str, list[str], bool]]:
    """Columns grouped for the terminal: accuracy (with times) then beyond accuracy, one
    table per cut-off K so each stays narrow."""
    suffixes = list(dict.fromkeys(c.partition("@")[2] for c in board.columns))
    groups = []
    for title, accuracy in (("accuracy", True), ("beyond accuracy", False)):
        for suffix in suffixes:
            cols = [
                c
                for c in board.columns
                if is_accuracy(c) == accuracy and c.partition("@")[2] == suffix
            ]
            if cols:
                groups.append((f"{title} @{suffix}" if suffix else title, cols, accuracy))
    return groups


def rich_tables(board: Leaderboard) -> list[Table]:
    """Terminal tables: accuracy (with fit/eval seconds) and beyond-accuracy, per K."""
    tables = []
    caption = (
        f"{board.protocol}; ± = 95% bootstrap CI half-width; * = significantly worse than "
        f"the best ({board.significance['test']} + Holm); green = best"
    )
    groups = _groups(board)
    for n, (title, cols, with_times) in enumerate(groups):
        t = Table(
            title=f"{board.experiment}: {title}",
            caption=caption if n == len(groups) - 1 else None,
            title_justify="left",
            caption_justify="left",
        )
        t.add_column("model", style="bold")
        for c in cols:
            t.add_column(c, justify="right", min_width=len(c))
        if with_times:
            t.add_column("fit s", justify="right")
            t.add_column("eval s", justify="right")
        for run in board.runs:
            row = []
            for c in cols:
                text = _fmt(board.cells[run.label][c], digits=3)
                row.append(f"[bold green]{text}[/]" if board.best.get(c) == run.label else text)
            if with_times:
                row += [f"{run.fit_seconds:.2f}", f"{run.eval_seconds:.2f}"]
            t.add_row(run.label, *row)
        tables.append(t)
    return tables


def write_json(board: Leaderboard, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(board.to_dict(), indent=2, default=_json_default))
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def write_html(board: Leaderboard, path: Path) -> Path:
    """A single offline page: the table plus Plotly charts (plotly.js inlined once)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    labels = [r.label for r in board.runs]
    acc = [c for c in board.columns if is_accuracy(c)]
    figures = []
    for col in acc:
        cells = [board.cells[lb][col] for lb in labels]
        err_hi = [0.0 if c.ci is None else c.ci[1] - c.mean for c in cells]
        err_lo = [0.0 if c.ci is None else c.mean - c.ci[0] for c in cells]
        fig = go.Figure(
            go.Bar(
                x=labels,
                y=[c.mean for c in cells],
                error_y={"type": "data", "array": err_hi, "arrayminus": err_lo},
                marker_color=["#d62728" if c.worse else "#1f77b4" for c in cells],
            )
        )
        fig.update_layout(title=f"{col} (95% CI; red = significantly worse than best)",
                          height=360, margin={"t": 50, "b": 40})  # fmt: skip
        figures.append(fig)
    if acc:
        primary = (
            acc[0]
            if board.task == "rating"
            else next((c for c in acc if metric_base(c) == "ndcg"), acc[0])
        )
        fig = go.Figure(
            go.Scatter(
                x=[r.fit_seconds for r in board.runs],
                y=[board.cells[r.label][primary].mean for r in board.runs],
                mode="markers+text",
                text=labels,
                textposition="top center",
            )
        )
        fig.update_layout(title=f"{primary} vs fit time", xaxis_title="fit seconds",
                          xaxis_type="log", yaxis_title=primary, height=400)  # fmt: skip
        figures.append(fig)
    divs = [
        pio.to_html(f, include_plotlyjs=(i == 0), full_html=False) for i, f in enumerate(figures)
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *board.columns])
    head += "<th>fit s</th><th>eval s</th><th>params</th>"
    body = []
    for run in board.runs:
        tds = [f"<td><b>{html.escape(run.label)}</b></td>"]
        for c in board.columns:
            style = ' class="best"' if board.best.get(c) == run.label else ""
            tds.append(f"<td{style}>{html.escape(_fmt(board.cells[run.label][c]))}</td>")
        tds.append(f"<td>{run.fit_seconds:.2f}</td><td>{run.eval_seconds:.2f}</td>")
        tds.append(f"<td><code>{html.escape(json.dumps(run.params, default=str))}</code></td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    sig = board.significance
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(board.experiment)} leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.best{{background:#e6f4e6;font-weight:bold}}</style></head><body>
<h1>{html.escape(board.experiment)}</h1>
<p>Task: {html.escape(board.task)}. Protocol: <b>{html.escape(board.protocol)}</b>.
± is the half-width of a 95% bootstrap CI ({sig["bootstrap"]} resamples of users);
* marks a model significantly worse than the best (paired {html.escape(sig["test"])}, Holm,
alpha {sig["alpha"]}).</p>
<table><tr>{head}</tr>{"".join(body)}</table>
{"".join(divs)}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
