"""Profile and segment describers: template by default, LLM text only when grounded."""

from __future__ import annotations

from recsight.analysis.interests import CategoryShare
from recsight.analysis.profile import ProfileItem, UserProfile, profile_summary
from recsight.analysis.segments import Segment, describe_segment
from recsight.llm.generate import OpenAIChatLLM, TemplateLLM
from recsight.llm.summaries import profile_describer, segment_describer

PROFILE = UserProfile(
    user_id="u7", n_events=42, event_types={"view": 40, "purchase": 2},
    first_seen=None, last_seen=None, active_days=5,
    top_categories=[CategoryShare(category="Books", share=0.7),
                    CategoryShare(category="Toys", share=0.3)],
    entropy=0.6, normalized_entropy=0.88, drift=None, mean_rating=None,
    top_items=[ProfileItem(item_id="i1", title="Cozy Mystery Box", category="Books", weight=3.0)],
    recent=[],
)  # fmt: skip
SEGMENT = Segment(segment=2, size=120, share=0.3, median_events=14, median_active_days=3,
                  median_recency_days=4, median_monetary=None, conversion=0.25,
                  top_categories=["Books", "Garden"])  # fmt: skip


def test_template_backend_returns_the_analysis_template():
    assert profile_describer(TemplateLLM())(PROFILE) == profile_summary(PROFILE)
    assert segment_describer(TemplateLLM())(SEGMENT) == describe_segment(SEGMENT)


def test_grounded_generation_is_used(stub):
    stub.reply = lambda m: "A broad reader: mostly Books, some Toys, loves Cozy Mystery Box."
    text = profile_describer(OpenAIChatLLM(stub.url, "m"))(PROFILE)
    assert text == "A broad reader: mostly Books, some Toys, loves Cozy Mystery Box."
    facts = stub.requests[-1][1]["messages"][1]["content"]
    assert "category Books: 70% of interest" in facts and "Draft: User u7: 42 events" in facts


def test_ungrounded_generation_falls_back(stub):
    reasons: list[str] = []
    stub.reply = lambda m: "Segment 2 loves Power Tools and Garden gear."
    text = segment_describer(OpenAIChatLLM(stub.url, "m"), on_reject=reasons.append)(SEGMENT)
    assert text == describe_segment(SEGMENT)
    assert reasons and "Power Tools" in reasons[0]
    stub.reply = lambda m: "Segment 2: 120 users, mostly Books and Garden; a quarter buy."
    assert segment_describer(OpenAIChatLLM(stub.url, "m"))(SEGMENT).startswith("Segment 2: 120")


def test_interest_summary_template_and_checked_rewording(stub):
    from recsight.analysis.profile import interest_summary
    from recsight.llm.summaries import interest_describer

    p = PROFILE.model_copy(
        update={"basis": "topic", "drift": 0.7, "early_top": "Toys", "recent_top": "Books",
                "days_since_last": 3.2}
    )  # fmt: skip
    draft = interest_summary(p)
    assert draft == (
        "Interested mostly in the topics Books (70%) and Toys (30%); lately more Books than "
        "Toys; last active 3 days before the end of the log."
    )
    reasons: list[str] = []
    stub.reply = lambda m: "Lately a fan of Power Tools and Books."
    assert interest_describer(OpenAIChatLLM(stub.url, "m"), on_reject=reasons.append)(p) == draft
    assert "Power Tools" in reasons[0]
    stub.reply = lambda m: "Reads Books most (70%), Toys less; lately more Books."
    assert interest_describer(OpenAIChatLLM(stub.url, "m"))(p).startswith("Reads Books most")
    facts = stub.requests[-1][1]["messages"][1]["content"]
    assert "topic from item text Books: 70% of interest" in facts
