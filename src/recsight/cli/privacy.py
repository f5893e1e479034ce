"""`recsight forget`: the right to erasure, from the store and from saved models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recsight.cli.common import DB_OPTION, JSON_OPTION, console, handle_errors, print_json
from recsight.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def forget(
        user_ids: list[str] = typer.Argument(
            ..., help="User ids to erase (as your data has them)."
        ),
        db: Path = DB_OPTION,
        model: list[Path] | None = typer.Option(
            None, "--model", help="A saved model or pipeline folder to erase them from too."
        ),
        retrain: bool = typer.Option(
            False,
            "--retrain",
            help="Refit the --model models that cannot unlearn exactly (ALS, SASRec, ...).",
        ),
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Erase users: their events, exposures, id-map entry and profile from the store, and
        their state from the given models (exact unlearning where the model allows)."""
        from recsight.data.pseudonyms import UserIds
        from recsight.data.store import Store, StoreBusyError
        from recsight.privacy.erasure import erase_users
        from recsight.privacy.unlearn import forget_in_folder, model_dirs, results_dict

        if not db.exists():
            raise InputError(f"{db}: no such store")
        folders = list(model or [])
        for folder in folders:
            if not (model_dirs(folder)[0] / "config.json").is_file():
                raise InputError(f"--model {folder}: not a saved model or pipeline folder")
        try:
            store = Store(db)
        except StoreBusyError:
            raise InputError(
                f"{db}: the store is in use by another process (a running `recsight serve` owns "
                "it): erase through the service instead, `DELETE /users/<id>` with its API key"
            ) from None
        with store:
            stored = UserIds.for_store(store).many(user_ids)
            erased = erase_users(store, stored)
            data = store.interactions() if retrain and folders else None
        models = []
        for folder in folders:
            try:
                models += results_dict(forget_in_folder(folder, stored, retrain=data))
            except InputError as exc:
                raise InputError(
                    f"the store no longer holds the users, but --model {folder}: {exc}"
                ) from None
        out = {**erased.to_dict(), "models": models}
        given = list(dict.fromkeys(user_ids))  # erase_users answers in this order
        for user, uid in zip(out["users"], given, strict=True):
            user.pop("user_hash")  # the log's business; the person already knows the ids
            user["user_id"] = uid
        if json_out:
            print_json(out)
            return
        totals = erased.totals()
        console.print(
            f"erased {len(user_ids)} user(s): {totals['events']:,} events, "
            f"{totals['exposures']:,} exposures, {totals['profile_rows']:,} profile rows"
            + (f", {totals['other_rows']:,} other rows" if totals["other_rows"] else "")
        )
        if models:
            table = Table("model folder", "model", "users removed", "status")
            for m in models:
                table.add_row(m["path"], m["model"], str(m["users_removed"]), m["status"])
            console.print(table)
        for path in erased.stale_exports:
            console.print(f"[yellow]still contains erased users:[/] {path} (written earlier)")
