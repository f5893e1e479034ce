"""Recommendations for users and anonymous histories, and similar items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from recsight.serving.deps import ServiceDep
from recsight.serving.pipeline import History
from recsight.serving.schemas import HistoryRequest, RecommendationsOut

router = APIRouter(tags=["recommendations"])


# async: the scoring runs on the event loop, not in the thread pool, since it is CPU-bound
# and short; threads would only add hand-offs and GIL contention to the tail latency
@router.get("/recommendations/{user_id}", response_model=RecommendationsOut)
async def get_recommendations(
    user_id: str,
    svc: ServiceDep,
    k: int = Query(10, ge=1, le=1000),
    exclude_seen: bool = True,
    category: str | None = None,
    explain: bool = False,
) -> RecommendationsOut:
    """Recommendations for a user; an unknown user gets the cold-start path."""
    user_id = svc.user_ids(user_id)
    recs = svc.pipeline.recommend(svc.histories.get(user_id), k, exclude_seen, category, explain)
    return svc.respond(user_id, recs)


@router.post("/recommendations", response_model=RecommendationsOut)
def post_recommendations(body: HistoryRequest, svc: ServiceDep) -> RecommendationsOut:
    """Cold start: recommendations for an anonymous history and/or a free-text interest."""
    if body.text:
        recs = svc.pipeline.recommend_text(body.text, body.k, body.category)
    else:
        history = History(
            items=body.history,
            types=["view"] * len(body.history),
            values=[None] * len(body.history),
        )
        recs = svc.pipeline.recommend(
            history, body.k, body.exclude_seen, body.category, body.explain
        )
    return svc.respond(None, recs)


@router.get("/items/{item_id}/similar")
def similar(item_id: str, svc: ServiceDep, k: int = Query(10, ge=1, le=1000)) -> dict[str, Any]:
    """Items most similar to an item."""
    items = svc.pipeline.similar_items(item_id, k)
    return {"item_id": item_id, "similar": [r.__dict__ for r in items]}
