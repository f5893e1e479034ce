"""Recommendations for users and anonymous histories, and similar items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from recsight.serving.deps import LeanRoute, ServiceDep
from recsight.serving.pipeline import History, RecommendRequest
from recsight.serving.schemas import HistoryRequest, RecommendationsOut

# LeanRoute: the GET route's parameters read without FastAPI's generic dependency solving
router = APIRouter(tags=["recommendations"], route_class=LeanRoute)


# async: model work runs on the micro-batcher's thread, history loads there too or in the
# thread pool (`Service.recommend_user`); the event loop only parses, awaits and answers.
# Both routes answer a JSONResponse of the plain values `response_model` documents: returned
# as a model, FastAPI would validate and serialize it again (~0.03 CPU ms a request)
@router.get("/recommendations/{user_id}", response_model=RecommendationsOut)
async def get_recommendations(
    user_id: str,
    svc: ServiceDep,
    k: int = Query(10, ge=1, le=1000),
    exclude_seen: bool = True,
    category: str | None = None,
    explain: bool = False,
) -> JSONResponse:
    """Recommendations for a user; an unknown user gets the cold-start path."""
    user_id = svc.user_ids(user_id)
    recs = await svc.recommend_user(user_id, k, exclude_seen, category, explain)
    return JSONResponse(svc.respond(user_id, recs))


@router.post("/recommendations", response_model=RecommendationsOut)
async def post_recommendations(body: HistoryRequest, svc: ServiceDep) -> JSONResponse:
    """Cold start: recommendations for an anonymous history and/or a free-text interest."""
    if body.text:
        pipeline = svc.pipeline
        recs = await run_in_threadpool(pipeline.recommend_text, body.text, body.k, body.category)
    else:
        history = History(
            items=body.history,
            types=["view"] * len(body.history),
            values=[None] * len(body.history),
        )
        request = RecommendRequest(history, body.k, body.exclude_seen, body.category, body.explain)
        recs = await svc.batcher.submit((None, request))
    return JSONResponse(svc.respond(None, recs))


@router.get("/items/{item_id}/similar")
def similar(item_id: str, svc: ServiceDep, k: int = Query(10, ge=1, le=1000)) -> dict[str, Any]:
    """Items most similar to an item."""
    items = svc.pipeline.similar_items(item_id, k)
    return {"item_id": item_id, "similar": [r.__dict__ for r in items]}
