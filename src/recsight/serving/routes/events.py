"""`POST /events`: behavior events, persisted before the acknowledgement."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError

from recsight.data.validation import EventError
from recsight.serving.deps import KEY_REQUIRED, KEY_RESPONSES, KeyFirstRoute, ServiceDep
from recsight.serving.schemas import EventBatch, EventsAck, EventsBody

router = APIRouter(tags=["events"], route_class=KeyFirstRoute)


@router.post(
    "/events", response_model=EventsAck, dependencies=KEY_REQUIRED, responses=KEY_RESPONSES
)
def post_events(body: EventsBody, svc: ServiceDep) -> EventsAck:
    """Persist one event, a list, or ``{"events": [...]}``; acknowledged once durable. Events
    follow the contract file ingest applies (`recsight.data.validation`): one that breaks it
    is refused with 422 naming the field, and nothing of the request is stored."""
    if isinstance(body, EventBatch):
        events, where = body.events, ("events",)
    else:
        events, where = (body, ()) if isinstance(body, list) else ([body], None)
    if not events:
        raise HTTPException(422, "no events in the request")
    try:
        return svc.persist(events)
    except EventError as err:
        loc = ("body", err.field) if where is None else ("body", *where, err.index, err.field)
        error = {"loc": loc, "msg": err.detail, "type": err.reason}
        raise RequestValidationError([error]) from None
