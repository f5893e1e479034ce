"""Request and response bodies of the HTTP API (pydantic, so OpenAPI documents them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BATCH = 10_000


class EventIn(BaseModel):
    """One behavior event with the canonical field names."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
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
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return datetime.fromtimestamp(v / 1000 if v >= 1e11 else v, tz=UTC)
        return v


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


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
