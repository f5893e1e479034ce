"""`POST /events`: behavior events, persisted before the acknowledgement."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from recsight.serving.deps import KEY_REQUIRED, ServiceDep
from recsight.serving.schemas import EventBatch, EventIn, EventsAck

router = APIRouter(tags=["events"])


@router.post("/events", response_model=EventsAck, dependencies=KEY_REQUIRED)
def post_events(body: EventIn | EventBatch | list[EventIn], svc: ServiceDep) -> EventsAck:
    """Persist one event, a list, or ``{"events": [...]}``; acknowledged once durable."""
    if isinstance(body, EventBatch):
        events = body.events
    else:
        events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, "no events in the request")
    return svc.persist(events)
