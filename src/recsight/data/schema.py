"""The canonical data model: event columns, the event-type vocabulary and column synonyms."""

from __future__ import annotations

#: The one event-type vocabulary. Unknown raw types are kept as they are.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "fav", "purchase", "rating")

#: Raw event-type spellings (lower-cased) that map onto the vocabulary, shared by all formats.
EVENT_TYPE_SYNONYMS: dict[str, str] = {
    "view": "view",
    "pv": "view",
    "page_view": "view",
    "pageview": "view",
    "detail": "view",
    "click": "click",
    "clk": "click",
    "cart": "cart",
    "addtocart": "cart",
    "add_to_cart": "cart",
    "add-to-cart": "cart",
    "fav": "fav",
    "favorite": "fav",
    "favourite": "fav",
    "wishlist": "fav",
    "like": "fav",
    "buy": "purchase",
    "purchase": "purchase",
    "order": "purchase",
    "transaction": "purchase",
    "rating": "rating",
    "rate": "rating",
}

#: Canonical event columns, in the order the store's `events` view shows them. `seq` is the
#: ingest order (monotone across appends); `request_id` links an event to the recommendation
#: response that showed the item.
EVENT_COLUMNS: tuple[str, ...] = (
    "seq",
    "user_id",
    "item_id",
    "user_idx",
    "item_idx",
    "timestamp",
    "event_type",
    "raw_event_type",
    "value",
    "event_id",
    "session_id",
    "request_id",
)

#: Source column names recognised for each canonical field (compared case-insensitively).
COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "userid", "user", "uid", "visitorid", "visitor_id", "customer_id"),
    "item_id": (
        "item_id",
        "itemid",
        "item",
        "iid",
        "product_id",
        "productid",
        "movie_id",
        "movieid",
        "sku",
    ),
    "timestamp": ("timestamp", "ts", "time", "datetime", "event_time", "date", "unix_timestamp"),
    "event_type": (
        "event_type",
        "event",
        "behavior",
        "behaviour",
        "behavior_type",
        "action",
        "type",
    ),
    "value": ("value", "rating", "quantity", "qty", "score"),
    "event_id": ("event_id", "eventid"),
    "session_id": ("session_id", "sessionid", "session"),
    "request_id": ("request_id",),
    "category": ("category", "category_id", "categoryid", "cat"),
}

#: Known item attributes; any other item column is kept as an extra attribute.
ITEM_COLUMNS: tuple[str, ...] = ("title", "description", "category", "tags", "text", "price")

#: Values >= this are read as unix milliseconds rather than seconds (1e11 s is the year 5138).
MILLISECONDS_THRESHOLD = 100_000_000_000


def canonical_event_type(raw: str) -> str:
    """Map a raw event type onto the vocabulary; unknown types are returned lower-cased as is."""
    key = raw.strip(" ").lower()
    return EVENT_TYPE_SYNONYMS.get(key, key)
