"""Experiments: one YAML file = dataset + split + models (+ tuning) + metrics.

`load_experiment(path)` validates the file (errors name the bad field); `run_experiment(cfg)`
loads the data, splits it, tunes each model on a validation split carved from train (grid or
Optuna), refits the best parameters on the full train split, evaluates on test and returns a
`Leaderboard`. Example::

    name: ml100k-topk
    dataset: {path: "data:ml-100k"}      # "data:" = the shared datasets folder
    split: random:0.8
    tuning: {metric: ndcg@10}
    models:
      - {name: popular}
      - {name: ease, grid: {l2: [100, 300, 1000]}}
    ks: [10, 20]

Relative dataset paths are resolved against the YAML file's folder; `output` (default
``out/experiments/<name>``) against the working directory.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsight.data.dataset import EVENT_COLUMNS, Interactions
from recsight.data.splits import SplitSpec, concat, filter_kcore, filter_min_rating, split
from recsight.errors import InputError
from recsight.evaluation.leaderboard import (
    LOWER_IS_BETTER,
    Leaderboard,
    ModelRun,
    build_leaderboard,
    metric_base,
)
from recsight.evaluation.protocol import (
    ACCURACY_METRICS,
    BEYOND_METRICS,
    RANKING_METRICS,
    RATING_METRICS,
    RankingPairs,
    evaluate_ranking,
    evaluate_rating,
    memory_budget_bytes,
    ranking_pairs,
)
from recsight.evaluation.significance import TESTS
from recsight.models.registry import FEATURELESS

ModelFactory = Callable[..., Any]
Progress = Callable[[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    """Either `path` (ingested into a temporary store) or `db` (an existing store)."""

    path: str | None = None
    db: str | None = None
    format: str | None = None
    mapping: dict[str, str] = Field(default_factory=dict)
    items: str | None = None
    users: str | None = None
    tz: str | None = None
    event_types: list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.db is None):
            raise ValueError("give exactly one of 'path' (a file/folder to ingest) or 'db'")
        return self


class FilterConfig(_Strict):
    kcore: int | None = Field(default=None, ge=1)
    min_rating: float | None = None


class SearchSpace(_Strict):
    """An Optuna search dimension: a range (`low`, `high`, optional `log`, `type`) or
    `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    type: Literal["float", "int"] = "float"
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchSpace:
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give either 'choices' or both 'low' and 'high'")
        if self.choices is None and self.low > self.high:  # type: ignore[operator]
            raise ValueError("'low' must not exceed 'high'")
        return self


class ModelConfig(_Strict):
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: dict[str, SearchSpace] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, v in grid.items() if not v]
        if empty:
            raise ValueError(f"grid values must be non-empty lists (empty: {', '.join(empty)})")
        return grid

    @property
    def display(self) -> str:
        return self.label or self.name


class TuningConfig(_Strict):
    """Validation split carved from train (default: the test split's method applied to
    train, or the split's own validation part when it has one), metric and search method."""

    split: str | None = None
    metric: str | None = None
    method: Literal["grid", "optuna"] = "grid"
    n_trials: int = Field(default=20, ge=1)


class SignificanceConfig(_Strict):
    test: str = "wilcoxon"
    alpha: float = Field(default=0.05, gt=0, lt=1)

    @field_validator("test")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TESTS:
            raise ValueError(f"expected one of {', '.join(TESTS)}")
        return v


class ExperimentConfig(_Strict):
    name: str
    task: Literal["ranking", "rating"] = "ranking"
    dataset: DatasetConfig
    filters: FilterConfig = Field(default_factory=FilterConfig)
    split: str = "random:0.8"
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    models: list[ModelConfig] = Field(min_length=1)
    metrics: list[str] | None = None
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    exclude_seen: bool = True
    sampled_negatives: int | None = Field(default=None, ge=1)
    # e.g. 4GB; default min(a quarter of RAM, half the memory available when evaluating)
    memory_budget: str | int | None = None
    max_test_users: int | None = Field(default=None, ge=1)  # a seeded sample of test users
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    bootstrap: int = Field(default=1000, ge=0)
    seed: int = 42
    output: str | None = None

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        SplitSpec.parse(v)
        return v

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            try:
                memory_budget_bytes(v)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("expected positive cut-offs such as [10, 20]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        allowed = RATING_METRICS if self.task == "rating" else RANKING_METRICS
        bad = [m for m in self.metrics or [] if m not in allowed]
        if bad:
            raise ValueError(
                f"metrics: {', '.join(bad)} not available for task {self.task!r}; "
                f"expected some of {', '.join(allowed)}"
            )
        labels = [m.display for m in self.models]
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            raise ValueError(f"models: duplicate label(s) {', '.join(dupes)}; set 'label'")
        if self.tuning.split is not None:
            SplitSpec.parse(self.tuning.split)
        if self.tuning.metric is not None:
            base = metric_base(self.tuning.metric)
            ok_rank = base in ACCURACY_METRICS and "@" in self.tuning.metric
            ok = base in RATING_METRICS if self.task == "rating" else ok_rank
            if not ok:
                hint = "rmse" if self.task == "rating" else "ndcg@10"
                raise ValueError(f"tuning.metric {self.tuning.metric!r}: expected e.g. {hint}")
        return self

    @property
    def tuning_metric(self) -> str:
        if self.tuning.metric:
            return self.tuning.metric
        return "rmse" if self.task == "rating" else f"ndcg@{self.ks[0]}"

    @property
    def needs_tuning(self) -> bool:
        return any(m.grid or m.search for m in self.models)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_experiment(path: str | Path) -> tuple[ExperimentConfig, Path]:
    """Parse and validate an experiment YAML; returns the config and the file's folder."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such experiment file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: expected a mapping with name, dataset, split, models, ...")
    return parse_experiment(raw, source=str(p)), p.resolve().parent


def parse_experiment(raw: dict[str, Any], source: str = "experiment") -> ExperimentConfig:
    """Validate a config mapping; the error names every bad field."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InputError(f"{source}: {problems}") from None
    except InputError as exc:  # a bad split spec raised by SplitSpec.parse
        raise InputError(f"{source}: {exc}") from None


# --- running ------------------------------------------------------------------------------


def _resolve(path: str, base: Path) -> Path:
    if path.startswith("data:"):
        from recsight.datasets import data_dir

        root = data_dir()
        if root is None:
            raise InputError(f"dataset {path!r}: set RECSIGHT_DATA_DIR to the datasets folder")
        return root / path.removeprefix("data:")
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def load_data(cfg: ExperimentConfig, base: Path, with_features: bool = True) -> Interactions:
    """The experiment's interactions, after the configured filters; `with_features` False
    leaves out the item and user tables (for models that never read them)."""
    from recsight.data.store import Store

    ds = cfg.dataset
    if ds.db is not None:
        with Store(_resolve(ds.db, base), read_only=True) as store:
            data = store.interactions(ds.event_types, with_features=with_features)
    else:
        from recsight.data.ingest import ingest

        src = _resolve(ds.path, base)  # type: ignore[arg-type]
        if not src.exists():
            raise InputError(f"dataset.path: {src} does not exist")
        with (
            tempfile.TemporaryDirectory(prefix="recsight-exp-") as tmp,
            Store(Path(tmp) / "experiment.duckdb") as store,
        ):
            ingest(
                store,
                src,
                items=_resolve(ds.items, base) if ds.items else None,
                users=_resolve(ds.users, base) if ds.users else None,
                fmt=ds.format,
                mapping=ds.mapping or None,
                tz=ds.tz,
            )
            data = store.interactions(ds.event_types, with_features=with_features)
    if len(data) == 0:
        raise InputError("dataset: no events to evaluate on (check dataset.event_types)")
    if cfg.filters.min_rating is not None:
        data = filter_min_rating(data, cfg.filters.min_rating)
    if cfg.filters.kcore is not None:
        data = filter_kcore(data, cfg.filters.kcore)
    if len(data) == 0:
        raise InputError("filters: no events left after filtering")
    return data


def without_events(data: Interactions) -> Interactions:
    """`data` as an empty log in the same id space (its features kept): what an evaluation
    given the split's `RankingPairs` needs of it. `data` itself is left whole, so a model
    that kept it still works; its arrays are freed once nothing else holds them."""
    return replace(
        data,
        **{
            c: None if getattr(data, c) is None else np.empty(0, getattr(data, c).dtype)
            for c in EVENT_COLUMNS
        },
    )


def _grid(model: ModelConfig) -> list[dict[str, Any]]:
    keys = list(model.grid)
    return [
        {**model.params, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(model.grid[k] for k in keys))
    ]


def _default_factory(name: str, **params: Any) -> Any:
    from recsight.models.registry import create_model

    return create_model(name, **params)


class ExperimentRunner:
    """Runs one experiment config; `factory(name, **params)` builds models (default: the
    model registry)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        base_dir: Path | None = None,
        factory: ModelFactory | None = None,
        progress: Progress | None = None,
        quiet: bool = False,
    ):
        self.cfg = cfg
        self.base_dir = base_dir or Path.cwd()
        self.factory = factory or _default_factory
        self.progress = progress or (lambda _msg: None)
        self.quiet = quiet
        # id(train), id(test) -> (train, test, their RankingPairs): derived once, shared by
        # every model; holding the parts keeps their ids from being reused
        self._pairs: dict[tuple[int, int], tuple[Interactions, Interactions, RankingPairs]] = {}

    # -- evaluation of one fitted model ----------------------------------------------------
    def _evaluate(self, model: Any, train: Interactions, test: Interactions, final: bool,
                  pairs: RankingPairs | None = None) -> Any:  # fmt: skip
        """`pairs`: the split's `ranking_pairs` (default: derived once per (train, test))."""
        cfg = self.cfg
        if cfg.task == "rating":
            return evaluate_rating(model, test)
        if final:
            metrics = cfg.metrics or list(ACCURACY_METRICS + BEYOND_METRICS + ("coverage",))
            ks: list[int] = cfg.ks
        else:
            metrics = [metric_base(cfg.tuning_metric)]
            ks = [int(cfg.tuning_metric.split("@")[1])]
        return evaluate_ranking(
            model,
            train,
            test,
            ks=tuple(ks),
            exclude_seen=cfg.exclude_seen,
            sampled_negatives=cfg.sampled_negatives,
            seed=cfg.seed,
            metrics=tuple(metrics),
            memory_budget=cfg.memory_budget,
            max_test_users=cfg.max_test_users,
            pairs=self._ranking_pairs(train, test) if pairs is None else pairs,
        )

    def _ranking_pairs(self, train: Interactions, test: Interactions) -> RankingPairs:
        key = (id(train), id(test))
        if key not in self._pairs:
            self._pairs[key] = (train, test, ranking_pairs(train, test, self.cfg.exclude_seen))
        return self._pairs[key][2]

    @property
    def needs_features(self) -> bool:
        """Whether any model may read item or user features (a custom factory's may)."""
        if self.factory is not _default_factory:
            return True
        return any(mc.name not in FEATURELESS for mc in self.cfg.models)

    def _build(self, mc: ModelConfig, params: dict[str, Any]) -> Any:
        model = self.factory(mc.name, **params)
        if self.quiet and hasattr(model, "verbose"):
            model.verbose = False  # no per-epoch training log under --quiet/--json
        if self.cfg.task == "rating" and not getattr(model, "explicit", False):
            raise InputError(
                f"models: {mc.name!r} does not predict ratings; the rating task needs an "
                "explicit model (e.g. biased_mf)"
            )
        return model

    def check_models(self) -> None:
        """Build every model with every parameter set the run will try (fixed params, each
        grid combination, each search choice and range end) before anything is loaded or
        trained, so a misspelt name or a bad value at the end of the file fails at once."""
        for n, mc in enumerate(self.cfg.models):
            candidates = _grid(mc)
            for key, space in mc.search.items():
                values = space.choices if space.choices is not None else [space.low, space.high]
                if space.choices is None and space.type == "int":
                    values = [int(v) for v in values]  # type: ignore[arg-type]
                candidates += [{**mc.params, key: v} for v in values]
            for params in candidates:
                try:
                    self._build(mc, params)
                except InputError as exc:
                    raise InputError(f"models[{n}] ({mc.display}): {exc}") from None

    def _score(self, mc: ModelConfig, params: dict[str, Any], train: Interactions,
               valid: Interactions) -> float:  # fmt: skip
        model = self._build(mc, params).fit(train)
        res = self._evaluate(model, train, valid, final=False)
        value = res.summary[self.cfg.tuning_metric]
        # optimise a "higher is better" number throughout
        return -value if metric_base(self.cfg.tuning_metric) in LOWER_IS_BETTER else value

    def tune(self, mc: ModelConfig, train: Interactions, valid: Interactions
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
        """Best params for one model on (train, valid) and the trials tried."""
        metric = self.cfg.tuning_metric
        sign = -1.0 if metric_base(metric) in LOWER_IS_BETTER else 1.0
        trials: list[dict[str, Any]] = []
        if self.cfg.tuning.method == "optuna" and mc.search:
            best = self._optuna(mc, train, valid, trials)
        else:
            candidates = _grid(mc)
            if len(candidates) == 1:
                return candidates[0], []
            values = []
            for i, params in enumerate(candidates):
                self.progress(f"tuning {mc.display}: {i + 1}/{len(candidates)} {params}")
                v = self._score(mc, params, train, valid)
                values.append(v)
                trials.append({"params": params, metric: sign * v})
            best = candidates[int(np.argmax(values))]
        return best, trials

    def _optuna(self, mc: ModelConfig, train: Interactions, valid: Interactions,
                trials: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        try:
            import optuna
        except ImportError:
            raise InputError(
                "tuning.method optuna needs the optuna package (pip install optuna)"
            ) from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        metric = self.cfg.tuning_metric
        sign = -1.0 if metric_base(metric) in LOWER_IS_BETTER else 1.0

        def suggest(trial: Any) -> dict[str, Any]:
            params = dict(mc.params)
            for key, space in mc.search.items():
                if space.choices is not None:
                    params[key] = trial.suggest_categorical(key, space.choices)
                elif space.type == "int":
                    params[key] = trial.suggest_int(key, int(space.low), int(space.high),
                                                    log=space.log)  # fmt: skip
                else:
                    params[key] = trial.suggest_float(key, space.low, space.high, log=space.log)
            return params

        def objective(trial: Any) -> float:
            params = suggest(trial)
            self.progress(f"tuning {mc.display}: trial {trial.number + 1}/"
                          f"{self.cfg.tuning.n_trials} {params}")  # fmt: skip
            v = self._score(mc, params, train, valid)
            trials.append({"params": params, metric: sign * v})
            return v

        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.cfg.seed)
        )
        study.optimize(objective, n_trials=self.cfg.tuning.n_trials)
        return {**mc.params, **study.best_params}

    def splits(
        self, data: Interactions, consume: bool = False
    ) -> tuple[Interactions, Interactions, tuple | None]:
        """(train, test, (inner_train, valid) or None when no model is tuned); `consume`
        releases `data`'s arrays while splitting (see `split`)."""
        cfg = self.cfg
        main = split(data, cfg.split, seed=cfg.seed, consume=consume)
        train = main.fit_part
        if not cfg.needs_tuning:
            return train, main.test, None
        if main.valid is not None and cfg.tuning.split is None:
            return train, main.test, (main.train, main.valid)
        inner = split(train, cfg.tuning.split or cfg.split, seed=cfg.seed + 1)
        return train, main.test, (concat(inner.train, inner.valid), inner.test)

    def run(self, data: Interactions | None = None) -> Leaderboard:
        """Train, tune, evaluate every model and rank them."""
        cfg = self.cfg
        self.check_models()
        loaded = data is None
        if data is None:
            self.progress("loading data")
            data = load_data(cfg, self.base_dir, with_features=self.needs_features)
        # a log loaded here is released while it is split (~3 GB at 100M events); the
        # caller's own data is left whole
        train, test, tuning = self.splits(data, consume=loaded)
        del data
        n_train, n_test = len(train), len(test)
        pairs = None
        if cfg.task == "ranking":
            # a final evaluation reads only the pairs and the id spaces: the test events go
            # before any model trains, the train events after the last fit (~0.5 and 2.1 GB
            # at 100M events)
            pairs = ranking_pairs(train, test, cfg.exclude_seen)
            test = without_events(test)
        runs: list[ModelRun] = []
        for n, mc in enumerate(cfg.models):
            t0 = time.perf_counter()
            params, trials = (
                self.tune(mc, tuning[0], tuning[1]) if tuning else (dict(mc.params), [])
            )
            tune_s = time.perf_counter() - t0 if trials else 0.0
            self.progress(f"fitting {mc.display} {params}")
            model = self._build(mc, params)
            t0 = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - t0
            if pairs is not None and n == len(cfg.models) - 1:
                train = without_events(train)
            self.progress(f"evaluating {mc.display}")
            t0 = time.perf_counter()
            result = self._evaluate(model, train, test, final=True, pairs=pairs)
            eval_s = time.perf_counter() - t0
            runs.append(ModelRun(mc.display, mc.name, params, result, fit_s, eval_s, tune_s,
                                 trials))  # fmt: skip
        context = {
            "dataset": cfg.dataset.model_dump(exclude_none=True),
            "filters": cfg.filters.model_dump(exclude_none=True),
            "split": cfg.split,
            "tuning": {
                "metric": cfg.tuning_metric if tuning else None,
                "method": cfg.tuning.method,
                "validation": None if tuning is None else {
                    "n_train": len(tuning[0]), "n_valid": len(tuning[1])
                },
            },
            "n_train": n_train,
            "n_test": n_test,
            "seed": cfg.seed,
            "ks": cfg.ks if cfg.task == "ranking" else None,
            "exclude_seen": cfg.exclude_seen,
        }  # fmt: skip
        return build_leaderboard(
            cfg.name,
            cfg.task,
            runs,
            test=cfg.significance.test,
            alpha=cfg.significance.alpha,
            n_boot=cfg.bootstrap,
            seed=cfg.seed,
            context=context,
        )


def output_dir(cfg: ExperimentConfig, override: Path | None = None) -> Path:
    """Where the experiment writes leaderboard.json/html."""
    if override is not None:
        return override
    return Path(cfg.output) if cfg.output else Path("out") / "experiments" / cfg.name


def run_experiment(
    path: str | Path,
    out: Path | None = None,
    factory: ModelFactory | None = None,
    progress: Progress | None = None,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
) -> tuple[Leaderboard, dict[str, Path]]:
    """Load, run and write an experiment: returns the leaderboard and the written files.
    `overrides` replace top-level keys of the YAML (the command line's options); `quiet`:
    models train without their own logs."""
    from recsight.evaluation.leaderboard import write_html, write_json

    cfg, base = load_experiment(path)
    if overrides:
        cfg = parse_experiment({**cfg.model_dump(exclude_unset=True), **overrides}, str(path))
    board = ExperimentRunner(cfg, base, factory, progress, quiet).run()
    target = output_dir(cfg, out)
    files = {
        "json": write_json(board, target / "leaderboard.json"),
        "html": write_html(board, target / "leaderboard.html"),
    }
    return board, files
