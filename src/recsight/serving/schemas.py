"""Request and response bodies of the HTTP API (pydantic, so OpenAPI documents them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from recsight.data.validation import MAX_ID_LENGTH, parse_timestamp

MAX_BATCH = 10_000


class EventIn(BaseModel):
    """One behavior event with the canonical field names."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    event_type: str = Field(min_length=1, max_length=64, description="view, click, cart, ...")
    value: float | None = Field(None, description="rating or quantity")
    timestamp: datetime | None = Field(None, description="ISO-8601 or unix seconds; default now")
    event_id: str | None = Field(None, max_length=256, description="makes retries idempotent")
    session_id: str | None = Field(None, max_length=256)
    request_id: str | None = Field(
        None, max_length=64, description="the recommendation response that showed this item"
    )

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _ids_as_strings(cls, v: Any) -> Any:
        # external ids are strings: 42 and "42" are the same user
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _unix_seconds(cls, v: Any) -> Any:
        # numbers (and numeric text) by the magnitude rule file ingest applies; a ValueError
        # becomes a 422 naming the field
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            ts = parse_timestamp(v)
            return None if ts is None else ts.replace(tzinfo=UTC)
        return v


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


def _body_kind(body: Any) -> str:
    if isinstance(body, list):
        return "list"
    if isinstance(body, EventBatch) or (isinstance(body, dict) and "events" in body):
        return "batch"
    return "event"


#: The body of ``POST /events``: one event, a list, or ``{"events": [...]}``. The branch is
#: picked by the body's shape, so a validation error names the wrong field of that branch
#: once instead of one error per branch of the union.
EventsBody = Annotated[
    Annotated[EventIn, Tag("event")]
    | Annotated[EventBatch, Tag("batch")]
    | Annotated[list[EventIn], Tag("list")],
    Discriminator(_body_kind),
]
#: The tags above as they appear in an error's location (dropped when it is shown).
BODY_TAGS = frozenset({"event", "batch", "list"})


class ErrorOut(BaseModel):
    """Every 4xx body: one message, and for a validation error each problem with the field
    it concerns (`events.3.value: ...`)."""

    detail: str
    errors: list[str] | None = None


class EventResult(BaseModel):
    status: str  # "stored" or "duplicate"
    seq: int | None


class EventsAck(BaseModel):
    stored: int
    duplicates: int
    results: list[EventResult]


class RecommendationOut(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    explanation: str | None = None
    evidence: list[dict[str, Any]] = []


class RecommendationsOut(BaseModel):
    request_id: str
    user_id: str | None
    model_version: str
    source: str = Field(description="main, a fallback model's name, or popular")
    recommendations: list[RecommendationOut]


class HistoryRequest(BaseModel):
    """Cold start: an anonymous history (oldest first) and/or a free-text interest."""

    model_config = ConfigDict(extra="forbid")

    history: list[str] = Field(default_factory=list, max_length=1000)
    text: str | None = Field(None, max_length=2000)
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    category: str | None = None
    explain: bool = False

    @field_validator("history", mode="before")
    @classmethod
    def _ids_as_strings(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model or pipeline folder; default: the same")
