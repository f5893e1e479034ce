"""`recsight train` and `recsight recommend`: fit a registered model, ask it for items."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from recsight.cli.common import (
    DB_OPTION,
    ENGINE_OPTION,
    EVENTS_OPTION,
    JSON_OPTION,
    LLM_GGUF_OPTION,
    LLM_MODEL_OPTION,
    LLM_URL_OPTION,
    QUIET_OPTION,
    SPARK_CONF_OPTION,
    SPARK_MASTER_OPTION,
    console,
    handle_errors,
    parse_params,
    print_json,
)
from recsight.errors import EngineError, InputError
from recsight.spark.session import check_engine

if TYPE_CHECKING:
    import pandas as pd

    from recsight.data.dataset import Interactions
    from recsight.data.pseudonyms import UserIds
    from recsight.models import Recommender


def _evaluate(model: Recommender, train: Interactions, test: Interactions) -> dict[str, Any]:
    """Test metrics: rating errors for explicit models, full-ranking metrics otherwise."""
    from recsight.evaluation.protocol import evaluate_ranking, evaluate_rating

    if model.explicit:
        return evaluate_rating(model, test).to_dict()  # type: ignore[arg-type]
    return evaluate_ranking(model, train, test, ks=(10, 20)).to_dict()


def _training_record(
    data: Interactions, split_spec: str | None, seed: int, part: str
) -> dict[str, Any]:
    """What a fit saw: which part of which split, its size and a content hash of its rows."""
    import numpy as np

    return _record(split_spec, seed, part, len(data), int(np.unique(data.user_idx).size),
                   int(np.unique(data.item_idx).size), data.content_hash())  # fmt: skip


def _record(
    split_spec: str | None, seed: int, part: str, n: int, users: int, items: int, sha: str
) -> dict[str, Any]:
    return {
        "part": part,
        "split": split_spec,
        "seed": seed if split_spec else None,
        "n_rows": n,
        "n_users": users,
        "n_items": items,
        "content_sha256": sha,
    }


def _cutoff(data: Interactions) -> str | None:
    """The latest event time of a fit's data (ISO-8601 UTC), None without timestamps."""
    import numpy as np

    if not data.has_timestamps:
        return None
    return _iso(float(np.nanmax(data.timestamp)))


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _privacy(model: Recommender) -> dict[str, Any] | None:
    """The privacy guarantee a fit reports (DP-SGD, federated DP), None for ordinary fits."""
    report = getattr(model, "privacy_", None)
    return None if report is None else report.to_dict()


def _describe(used: dict[str, Any], test: Interactions | None) -> str:
    what = f"{used['n_rows']:,} events of {used['n_users']:,} users, {used['n_items']:,} items"
    if test is None:
        return f"fitting on all {what}"
    return (
        f"fitting on {what} (split {used['split']}, seed {used['seed']}: train + valid); "
        f"{len(test):,} test events held out"
    )


def _refit_params(model: Recommender) -> dict[str, Any]:
    """Hyperparameters for the refit on all events: as chosen, except that a model that
    stopped early on its internal validation trains for its best epoch count without it
    (there is no held-out data left to stop on)."""
    params = model.get_params()
    history = getattr(model, "history_", None)
    if params.get("early_stopping") and history is not None and history.best_epoch:
        params.update(epochs=int(history.best_epoch), early_stopping=False)
    return params


def _status(message: str, show: bool) -> AbstractContextManager[Any]:
    """A Rich spinner while work runs, or nothing under --json/--quiet."""
    return console.status(message) if show else nullcontext()


def _items_frame(db: Path | None) -> pd.DataFrame:
    """The store's items (titles, categories) for labels and explanations; empty without one."""
    import pandas as pd

    if db is None:
        return pd.DataFrame({"item_id": pd.Series(dtype=str)})
    from recsight.data.store import Store

    with Store(db, read_only=True) as store:
        return store.items_frame()


def _titles(items: pd.DataFrame) -> dict[str, str]:
    if "title" not in items.columns:
        return {}
    rows = items[["item_id", "title"]].dropna()
    return {str(i): str(t) for i, t in zip(rows.item_id, rows.title, strict=True) if str(t).strip()}


def _user_ids(model_dir: Path, db: Path | None) -> UserIds:
    """How `--user` maps to the model's ids: pseudonymized when the store (or, without
    --db, the store the model was trained on) is."""
    from recsight.data.pseudonyms import META_FINGERPRINT, UserIds

    if db is not None:
        from recsight.data.store import Store

        with Store(db, read_only=True) as store:
            return UserIds.for_store(store)
    manifest = model_dir / "manifest.json"
    config = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
    return UserIds.for_fingerprint(config.get(META_FINGERPRINT), str(model_dir))


def _store_history(db: Path, user: str) -> tuple[list[str], list[float], int]:
    """The user's events in the store as (item ids, weights summed per item) plus the count of
    distinct items; weights follow the data layer's default event weights."""
    from recsight.data.store import Store

    with Store(db, read_only=True) as store:
        data = store.interactions(with_features=False, users=[user])
    u = data.users.index_of([user], missing="ignore")[0]
    if u < 0 or not len(data):
        raise InputError(f"--user {user!r}: not in the store {db}")
    row = data.to_csr()[int(u)]
    return list(data.items.ids_of(row.indices)), row.data.tolist(), row.nnz


def _recommend_all(
    model_dir: Path,
    db: Path | None,
    events: Path | None,
    out: Path | None,
    k: int,
    explain: bool,
    memory_budget: str | None,
    llm: Any,
    as_json: bool,
    ann: bool = False,
) -> None:
    """`recommend --all-users`: every user's top-k into a Parquet folder, with a progress bar."""
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from recsight.cli.common import open_data
    from recsight.serving.batch import recommend_all_users
    from recsight.serving.pipeline import Pipeline

    if out is None:
        raise InputError("recommend --all-users: --out DIR is required (a Parquet folder)")
    if (db is None) == (events is None):
        raise InputError("recommend --all-users: give exactly one of --db or --events")
    with open_data(db or Path(), events) as store:
        pipeline = Pipeline.load(model_dir, store.items_frame(), llm)
        with Progress(
            *Progress.get_default_columns()[:-1],
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as bar:
            task = bar.add_task("users", total=None)
            report = recommend_all_users(
                pipeline,
                store,
                out,
                k=k,
                explain=explain,
                memory_budget=memory_budget,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                ann=ann,
            )
    summary = {
        "out": str(report.out),
        "users": report.n_users,
        "rows": report.n_rows,
        "parts": report.n_parts,
        "sources": report.sources,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"wrote {report.n_rows:,} rows for {report.n_users:,} users to {report.out} "
            f"({', '.join(f'{v:,} {k}' for k, v in report.sources.items())})"
        )


def _train_spark(
    name: str,
    events: str | None,
    out: Path,
    params: dict[str, Any],
    split_spec: str | None,
    seed: int,
    master: str | None,
    conf: list[str] | None,
    as_json: bool,
    quiet: bool,
    refit: bool = False,
    ann: bool = False,
) -> None:
    """`train NAME --engine spark --events DIR`: ALS on MLlib, neural models on DDP; with
    --split, test metrics on the events the local engine holds out too; with --refit, then
    fitted again on every event (as on the local engine); with --ann, the ANN index built."""
    from recsight.data.pseudonyms import META_FINGERPRINT
    from recsight.data.splits import SplitSpec, concat
    from recsight.models import create_model, model_class
    from recsight.models.ann import build_for, supports_ann
    from recsight.models.manifest import write_manifest
    from recsight.spark.session import parse_conf, spark_session
    from recsight.spark.train import require_spark_trainable, train_on_spark

    if events is None:
        raise EngineError("train --engine spark reads a dataset layout: pass --events DIR or URL")
    require_spark_trainable(name, params)  # before starting Spark
    if split_spec is not None:
        SplitSpec.parse(split_spec)  # a bad spec fails before Spark starts
    if refit and not split_spec:
        raise InputError("--refit: give --split too (refit follows a held-out test)")
    if ann and not supports_ann(create_model(name)):
        build_for(create_model(name))  # refuses with the reason, before Spark starts
    show = not (quiet or as_json)
    if "verbose" in model_class(name).param_names() and not show:
        params.setdefault("verbose", False)
    started = time.perf_counter()
    report: dict[str, Any] = {}
    with spark_session(master, parse_conf(conf)) as spark:
        with _status(f"fitting {name}", show):
            model, facts, parts = train_on_spark(spark, name, events, out, params, split_spec,
                                                 seed)  # fmt: skip
        fit_seconds = time.perf_counter() - started
        used = None
        if parts is not None:
            used = _training_record(parts.fit_part, split_spec, seed, "train+valid")
            with _status("evaluating on the test part", show):
                metrics = _evaluate(model, parts.fit_part, parts.test)
            metrics.update({"split": split_spec, "seed": seed, "fitted_on": used})
            report.update(training=used, metrics=metrics)
        if refit and parts is not None:
            chosen, refit_params = model.get_params(), _refit_params(model)
            report["refit"] = {k: v for k, v in refit_params.items() if chosen.get(k) != v}
            if "num_processes" in params:
                refit_params["num_processes"] = params["num_processes"]
            started = time.perf_counter()
            with _status(f"refitting {name} on all events", show):
                model, facts, _ = train_on_spark(spark, name, events, out, refit_params)
            fit_seconds = time.perf_counter() - started
            # every event: the split's parts together (the hash ignores their order)
            used = _training_record(concat(parts.fit_part, parts.test), split_spec, seed, "all")
            report["training"] = used
    if ann:
        with _status("building the ANN index", show):
            build_for(model).save(out)
    if "metrics" in report:
        (out / "metrics.json").write_text(json.dumps(report["metrics"], indent=2) + "\n")
    # user ids in the model are pseudonyms of this key (None: plain ids), as `train` records
    fingerprint = facts.pop(META_FINGERPRINT)
    report = {"model": name, "out": str(out), "params": model.get_params(), **facts,
              "fit_seconds": round(fit_seconds, 3), **report}  # fmt: skip
    config: dict[str, Any] = {"model": name, "params": model.get_params(), **facts,
                              "refit": refit}  # fmt: skip
    if parts is not None:
        config.update(split=split_spec, seed=seed, training=used)
    config[META_FINGERPRINT] = fingerprint
    write_manifest(out, ".", training_cutoff=None, config=config)
    if as_json:
        print_json(report)
    elif not quiet:
        console.print(f"[green]trained[/] {name} on Spark in {fit_seconds:.2f}s -> {out}")
        for key, value in report.get("metrics", {}).get("metrics", {}).items():
            console.print(f"  {key}: {value:.4f}")


def _recommend_all_spark(
    model_dir: Path,
    events: str | None,
    out: Path | None,
    k: int,
    explain: bool,
    master: str | None,
    conf: list[str] | None,
    as_json: bool,
    ann: bool = False,
) -> None:
    """`recommend --all-users --engine spark`: every user's top-k written by Spark (with
    `ann`, candidates from the model's ANN index, re-scored exactly)."""
    from recsight.spark.batch import recommend_all_users_spark
    from recsight.spark.layout import read_layout
    from recsight.spark.session import parse_conf, spark_session

    if out is None:
        raise InputError("recommend --all-users: --out DIR is required (a Parquet folder)")
    if events is None:
        raise EngineError(
            "recommend --engine spark reads a dataset layout: pass --events DIR or URL"
        )
    with spark_session(master, parse_conf(conf)) as spark:
        layout = read_layout(spark, events)
        items = layout.df("items").toPandas()
        written = recommend_all_users_spark(
            model_dir, items, layout.df("events"), layout.df("user_map"), str(out), k, explain,
            ann=ann,
        )  # fmt: skip
        n_rows, n_users = written.count(), written.select("user_id").distinct().count()
    if as_json:
        print_json({"out": str(out), "users": n_users, "rows": n_rows, "engine": "spark"})
    else:
        console.print(f"wrote {n_rows:,} rows for {n_users:,} users to {out} (on Spark)")


def register(app: typer.Typer) -> None:
    """Add `train` and `recommend` to the application."""

    @app.command("train")
    @handle_errors
    def train(
        name: str = typer.Argument(..., help="Registered model name (e.g. ease, als, itemknn)."),
        db: Path = DB_OPTION,
        out: Path = typer.Option(..., "--out", help="Directory to save the model into."),
        param: list[str] = typer.Option(None, "--param", help="Hyperparameter key=value."),
        split_spec: str | None = typer.Option(
            None,
            "--split",
            help="Hold out a test part (e.g. random:0.8), fit on the rest, report test metrics.",
        ),
        seed: int = typer.Option(42, "--seed", help="Seed of the split."),
        refit: bool = typer.Option(
            False,
            "--refit",
            help="After the test metrics, fit the saved model on all events (neural models "
            "for the best validation epoch count).",
        ),
        ann: bool = typer.Option(
            False,
            "--ann",
            help="Also build an ANN index (faiss HNSW) of the item vectors, for serving and "
            "`recommend --all-users --ann` over big catalogs (als, bpr).",
        ),
        events: str | None = EVENTS_OPTION,
        engine: str = ENGINE_OPTION,
        spark_master: str | None = SPARK_MASTER_OPTION,
        spark_conf: list[str] | None = SPARK_CONF_OPTION,
        as_json: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Train a registered model on the store's (or a dataset layout's) interactions and
        save it; with --engine spark, ALS on MLlib and neural models on DDP."""

        from recsight.cli.common import open_data
        from recsight.cli.topics import auto_topics
        from recsight.data.pseudonyms import META_FINGERPRINT
        from recsight.data.splits import split
        from recsight.models import create_model, model_class
        from recsight.models.ann import build_for, supports_ann
        from recsight.models.manifest import write_manifest

        if check_engine(engine, "train"):
            _train_spark(name, events, out, parse_params(param), split_spec, seed,
                         spark_master, spark_conf, as_json, quiet, refit, ann)  # fmt: skip
            return
        if refit and not split_spec:
            raise InputError("--refit: give --split too (refit follows a held-out test)")
        show = not (quiet or as_json)
        params = parse_params(param)
        if "cache_db" in model_class(name).param_names():
            params.setdefault("cache_db", str(db))  # text embeddings cached in the store
        model = create_model(name, **params)
        if not show and hasattr(model, "verbose"):
            model.verbose = False  # --quiet/--json: no per-epoch training log either
        if ann and not supports_ann(model):
            build_for(model)  # refuses with the reason, before any fitting
        if events is None:  # a catalog with text but no categories gets topics first
            note = auto_topics(db, show)
            if note and show:
                console.print(note)
        matrix = None
        with open_data(db, None if events is None else Path(events)) as store:
            # a matrix model fitted on every event needs only the summed (user, item)
            # weights: those are summed inside DuckDB, and the events read for the manifest
            # (hash, counts, cut-off) are freed before the fit
            by_matrix = (
                split_spec is None
                and callable(getattr(model, "fit_matrix", None))
                and not store.needs_event_fill(model.weights)
            )
            fingerprint = store.meta(META_FINGERPRINT)
            test = None
            if by_matrix:
                # the record (counts, cut-off, content hash) is computed in SQL and the
                # (user, item) weights summed in DuckDB: no per-event arrays in Python
                n_fit, n_users, n_items, last = store.event_counts()
                used = _record(None, seed, "all", n_fit, n_users, n_items, store.content_hash())
                cutoff = _iso(last)
                matrix = (store.weighted_matrix(model.weights), store.user_index(),
                          store.item_index())  # fmt: skip
            else:
                data = store.interactions()
                fit_data = data
                if split_spec:
                    # fit on everything but the test part, as `recsight evaluate` does: with
                    # leave_last the validation event is the input right before the test event
                    parts = split(data, split_spec, seed=seed)
                    fit_data, test = parts.fit_part, parts.test
                part = "all" if test is None else "train+valid"
                used = _training_record(fit_data, split_spec, seed, part)
                cutoff = _cutoff(fit_data)
                n_fit = len(fit_data)
        if show:
            console.print(_describe(used, test))
        started = time.perf_counter()
        with _status(f"fitting {name} on {n_fit:,} events", show):
            if matrix is not None:
                model.fit_matrix(*matrix)
            else:
                model.fit(fit_data)
        fit_seconds = time.perf_counter() - started
        report: dict[str, Any] = {"model": name, "out": str(out)}
        metrics = None
        if test is not None:
            with _status("evaluating on the test part", show):
                metrics = _evaluate(model, fit_data, test)
            metrics.update({"split": split_spec, "seed": seed, "fitted_on": used})
            report["metrics"] = metrics
        if refit:
            chosen, refit_params = model.get_params(), _refit_params(model)
            report["refit"] = {k: v for k, v in refit_params.items() if chosen.get(k) != v}
            model = create_model(name, **refit_params)
            fit_data = data
            used = _training_record(data, split_spec, seed, "all")
            cutoff, n_fit = _cutoff(data), len(data)
            if show:
                changed = ", ".join(f"{k}={v}" for k, v in report["refit"].items())
                console.print(f"refitting on all events: {changed or 'same hyperparameters'}")
            started = time.perf_counter()
            with _status(f"refitting {name} on {len(data):,} events", show):
                model.fit(data)
            fit_seconds = time.perf_counter() - started
        model.save(out)
        if ann:
            with _status("building the ANN index", show):
                build_for(model).save(out)
        if metrics is not None:
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        # the folder is also a one-model serving pipeline, with a manifest for `serve`
        write_manifest(
            out,
            ".",
            training_cutoff=cutoff,
            config={
                "model": name,
                "params": model.get_params(),
                "split": split_spec,
                "seed": seed,
                "db": str(db) if events is None else None,
                "events": events,
                "refit": refit,
                "training": used,
                "privacy": _privacy(model),
                # user ids in the model are pseudonyms of this key: `recommend --user` hashes
                META_FINGERPRINT: fingerprint,
            },
        )
        report.update({
            "params": model.get_params(),
            "n_train_events": n_fit,
            "training": used,
            "fit_seconds": round(fit_seconds, 3),
            "training_cutoff": cutoff,
            "privacy": _privacy(model),
        })  # fmt: skip
        if as_json:
            print_json(report)
        elif not quiet:
            console.print(f"[green]trained[/] {name} in {fit_seconds:.2f}s -> {out}")
            if report["privacy"] is not None:
                p = {k: f"{v:.3g}" if isinstance(v, float) else v
                     for k, v in report["privacy"].items()}  # fmt: skip
                console.print(
                    f"  privacy: {p['unit']}-level, epsilon spent {p['epsilon_spent']} "
                    f"(target {p['epsilon_target']}) at delta {p['delta']}"
                )
            if "metrics" in report:
                for key, value in report["metrics"].get("metrics", {}).items():
                    console.print(f"  {key}: {value:.4f}")

    @app.command("recommend")
    @handle_errors
    def recommend(
        model_dir: Path = typer.Option(..., "--model", help="A directory saved by train."),
        user: str | None = typer.Option(None, "--user", help="A user id."),
        history: str | None = typer.Option(
            None, "--history", help="Comma-separated item ids (a new or changed history)."
        ),
        text: str | None = typer.Option(None, "--text", help="A free-text query."),
        db: Path | None = typer.Option(
            None, "--db", help="Store for titles and for the user's latest events."
        ),
        k: int = typer.Option(10, "--k", min=1, help="How many items."),
        explain: bool = typer.Option(False, "--explain", help="Say which history items led."),
        all_users: bool = typer.Option(
            False, "--all-users", help="Every user of --db/--events, written to --out."
        ),
        ann: bool = typer.Option(
            False,
            "--ann",
            help="With --all-users: candidates from the model's ANN index (train --ann), "
            "re-scored exactly.",
        ),
        events: str | None = EVENTS_OPTION,
        out: Path | None = typer.Option(
            None, "--out", help="With --all-users: the Parquet folder to write."
        ),
        memory_budget: str | None = typer.Option(
            None,
            "--memory-budget",
            help="With --all-users: memory for scoring users at once, e.g. 4GB "
            "(default a quarter of RAM or half of the available memory, whichever is less).",
        ),
        llm_url: str | None = LLM_URL_OPTION,
        llm_model: str | None = LLM_MODEL_OPTION,
        llm_gguf: str | None = LLM_GGUF_OPTION,
        engine: str = ENGINE_OPTION,
        spark_master: str | None = SPARK_MASTER_OPTION,
        spark_conf: list[str] | None = SPARK_CONF_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Recommend items for a user, a history, or (with a text encoder) a text query; or,
        with --all-users, for every user into a Parquet folder (on Spark with --engine
        spark)."""
        import numpy as np

        from recsight.llm.content import recommend_for_text
        from recsight.llm.explain import explain_recommendation
        from recsight.llm.generate import make_llm
        from recsight.models import load_model

        given = [o for o, v in (("--user", user), ("--history", history), ("--text", text)) if v]
        if check_engine(engine, "recommend"):
            spark_only = [("--user", user), ("--history", history), ("--text", text),
                          ("--db", db), ("--memory-budget", memory_budget),
                          ("--llm-url", llm_url), ("--llm-gguf", llm_gguf)]  # fmt: skip
            bad = [o for o, v in spark_only if v]
            if not all_users or bad:
                raise EngineError(
                    "recommend --engine spark: only --all-users --events DIR runs on Spark "
                    "(template explanations on the executors)"
                    + (f"; {bad[0]} runs on the local engine only" if bad else "")
                )
            _recommend_all_spark(model_dir, events, out, k, explain, spark_master, spark_conf,
                                 as_json, ann)  # fmt: skip
            return
        llm = make_llm(llm_url, llm_model, llm_gguf)
        if all_users:
            if given:
                raise InputError(f"recommend --all-users: {given[0]} does not apply")
            local_events = None if events is None else Path(events)
            _recommend_all(
                model_dir, db, local_events, out, k, explain, memory_budget, llm, as_json, ann
            )
            return
        if len(given) != 1:
            raise InputError(
                "recommend: give exactly one of --user, --history, --text or --all-users"
            )
        model = load_model(model_dir)
        # the evidence for an explanation: a known user's training history, or a history
        evidence: str | list[str] = []
        if text is not None:
            ids, scores = recommend_for_text(model, text, k=k)
        elif user is not None:
            user = _user_ids(model_dir, db)(user)
            use_store = False
            if db is not None:
                hist_items, hist_weights, n_store = _store_history(db, user)
                known = user in model.users_
                n_model = model.seen_[int(model.users_.index_of([user])[0])].nnz if known else 0
                # newer events than the model saw: fold the store's history in
                use_store = not known or n_store != n_model
            if use_store:
                ids, scores = model.recommend_for_history(
                    hist_items, k=k, weights=hist_weights, user=user
                )
                evidence = hist_items
            else:
                ids, scores = (a[0] for a in model.recommend([user], k=k))
                evidence = user
        else:
            evidence = [h.strip() for h in (history or "").split(",") if h.strip()]
            ids, scores = model.recommend_for_history(evidence, k=k)
        keep = [j for j, i in enumerate(ids) if i is not None]
        ids, scores = np.asarray(ids)[keep], np.asarray(scores)[keep]
        items_frame = _items_frame(db)
        titles = _titles(items_frame)
        recs = []
        for item, score in zip(ids, scores, strict=True):
            rec: dict[str, Any] = {"item_id": str(item), "score": float(score)}
            if str(item) in titles:
                rec["title"] = titles[str(item)]
            if explain:
                exp = explain_recommendation(model, evidence, str(item), items_frame, llm=llm)
                rec["explanation"] = exp.text if exp.grounded else "popular with similar users"
                rec["evidence"] = [e.item_id for e in exp.evidence]
            recs.append(rec)
        if as_json:
            print_json({"recommendations": recs})
            return
        table = Table(title=f"{model.name}: top {len(recs)}")
        table.add_column("#", justify="right")
        table.add_column("item")
        table.add_column("score", justify="right")
        if explain:
            table.add_column("why")
        for n, rec in enumerate(recs, 1):
            label = rec["item_id"] + (f" — {rec['title']}" if "title" in rec else "")
            row = [str(n), label, f"{rec['score']:.4f}"]
            if explain:
                row.append(rec["explanation"])
            table.add_row(*row)
        console.print(table)
