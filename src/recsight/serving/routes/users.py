"""A user's profile, and the right to erasure."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from recsight.errors import InputError
from recsight.serving.deps import KEY_REQUIRED, KEY_RESPONSES, KeyFirstRoute, ServiceDep

router = APIRouter(tags=["users"], route_class=KeyFirstRoute)


@router.get("/users/{user_id}/profile")
def profile(user_id: str, svc: ServiceDep) -> dict[str, Any]:
    """A user's event count, interest profile and summary."""
    from recsight.analysis.profile import user_profile
    from recsight.analysis.source import from_store

    user_id = svc.user_ids(user_id)
    try:  # on this thread's read connection: ingest goes on meanwhile
        prof = svc.read(lambda store: user_profile(from_store(store), user_id))
    except InputError:
        return {
            "user_id": user_id,
            "n_events": 0,
            "known": False,
            "summary": "no events yet: recommendations follow popularity",
        }
    return {**prof.model_dump(), "known": True}


@router.delete("/users/{user_id}", dependencies=KEY_REQUIRED, responses=KEY_RESPONSES)
def delete_user(user_id: str, svc: ServiceDep) -> dict[str, Any]:
    """Erase a user (right to erasure): events, exposures, profile and cached history from
    the store, and the user's state from the served models. Answers 200 with what was
    removed, zeros for an unknown user (the answer does not reveal who exists)."""
    return svc.forget(user_id)
