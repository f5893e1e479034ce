"""User-interest and segment summaries from the behavior-analysis results, optionally reworded
by a generative backend and always checked against the numbers they come from.

`recsight.analysis.profile.user_profile` and `recsight.analysis.segments.segments` take a
``describe`` callable; `profile_describer` and `segment_describer` build ones that start from
the analysis package's own template sentence (the draft), let the LLM reword it with the facts,
and keep the draft when the LLM's text names a category or item the facts do not contain.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from recsight.analysis.profile import (
    ProfileDescriber,
    UserProfile,
    interest_facts,
    interest_summary,
    profile_summary,
)
from recsight.analysis.segments import Segment, SegmentDescriber, describe_segment
from recsight.errors import InputError
from recsight.llm.explain import Catalog, check_grounding
from recsight.llm.generate import LLM, TemplateLLM, reword_prompt

#: Where the last fallback reasons go when a caller wants them (e.g. to report them).
RejectHook = Callable[[str], None]


def _empty_catalog() -> Catalog:
    return Catalog.from_items(pd.DataFrame({"item_id": pd.Series([], dtype=str)}))


def _reword(
    llm: LLM, draft: str, facts: list[str], allowed: list[str], catalog: Catalog,
    on_reject: RejectHook | None,
) -> str:  # fmt: skip
    if isinstance(llm, TemplateLLM):
        return draft
    try:
        text = llm.generate(reword_prompt(draft, facts))
    except InputError as exc:
        reason: str | None = f"{llm.name} failed: {exc}"
    else:
        reason = check_grounding(text, allowed, catalog)
    if reason is None:
        return text
    if on_reject is not None:
        on_reject(reason)
    return draft


def profile_facts(p: UserProfile) -> tuple[list[str], list[str]]:
    """(facts for the prompt, names a summary may use) of one user profile."""
    facts = [f"User {p.user_id} has {p.n_events} events"]
    if p.active_days is not None:
        facts.append(f"active on {p.active_days} days")
    facts += [f"category {c.category}: {c.share:.0%} of interest" for c in p.top_categories[:3]]
    facts += [f'top item: "{i.title or i.item_id}"' for i in p.top_items[:3]]
    if p.normalized_entropy is not None:
        kind = "broad" if p.normalized_entropy >= 0.6 else "focused"
        facts.append(f"interests are {kind}")
    if p.mean_rating is not None:
        facts.append(f"mean rating {p.mean_rating:.2f}")
    allowed = [c.category for c in p.top_categories] + [
        i.title or i.item_id for i in p.top_items + p.recent  # type: ignore[operator]
    ] + [f"User {p.user_id}"]  # fmt: skip
    return facts, allowed


def profile_describer(
    llm: LLM, catalog: Catalog | None = None, on_reject: RejectHook | None = None
) -> ProfileDescriber:
    """A ``describe`` for `user_profile`: the template summary, reworded by `llm` when its text
    passes the grounding check against the profile (and `catalog`, to spot other items)."""
    cat = catalog if catalog is not None else _empty_catalog()

    def describe(p: UserProfile) -> str:
        facts, allowed = profile_facts(p)
        return _reword(llm, profile_summary(p), facts, allowed, cat, on_reject)

    return describe


def interest_describer(
    llm: LLM, catalog: Catalog | None = None, on_reject: RejectHook | None = None
) -> ProfileDescriber:
    """A ``describe_interests`` for `user_profile`: the template persona, reworded by `llm`
    when its text names nothing outside the profile's categories or topics (checked as for
    explanations; `catalog` lets it spot other items' names)."""
    cat = catalog if catalog is not None else _empty_catalog()

    def describe(p: UserProfile) -> str:
        allowed = [c.category for c in p.top_categories]
        allowed += [n for n in (p.early_top, p.recent_top) if n]
        return _reword(llm, interest_summary(p), interest_facts(p), allowed, cat, on_reject)

    return describe


def segment_describer(
    llm: LLM, catalog: Catalog | None = None, on_reject: RejectHook | None = None
) -> SegmentDescriber:
    """A ``describe`` for `segments`: the template description, reworded by `llm` when its text
    names no category outside the segment's own."""
    cat = catalog if catalog is not None else _empty_catalog()

    def describe(seg: Segment) -> str:
        facts = [f"Segment {seg.segment} has {seg.size} users ({seg.share:.0%})",
                 f"median {seg.median_events:g} events per user"]  # fmt: skip
        if seg.median_recency_days is not None:
            facts.append(f"last seen a median {seg.median_recency_days:.0f} days before the end")
        if seg.conversion is not None:
            facts.append(f"{seg.conversion:.0%} of its users purchased")
        facts += [f"top category: {c}" for c in seg.top_categories[:3]]
        allowed = list(seg.top_categories) + [f"Segment {seg.segment}"]
        return _reword(llm, describe_segment(seg), facts, allowed, cat, on_reject)

    return describe
