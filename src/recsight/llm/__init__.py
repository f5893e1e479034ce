"""Large-model assistance: text encoders and their cache, the content and hybrid (cold-start)
recommenders, generative backends, grounded explanations and summaries."""

from recsight.llm.coldstart import HybridRecommender, cold_item_split
from recsight.llm.content import ContentRecommender, recommend_for_text
from recsight.llm.encoders import DEFAULT_ENCODER, EmbeddingCache, encode_texts, make_encoder
from recsight.llm.explain import Explanation, check_grounding, explain_recommendation
from recsight.llm.generate import LLM, make_llm

__all__ = [
    "DEFAULT_ENCODER",
    "LLM",
    "ContentRecommender",
    "EmbeddingCache",
    "Explanation",
    "HybridRecommender",
    "check_grounding",
    "cold_item_split",
    "encode_texts",
    "explain_recommendation",
    "make_encoder",
    "make_llm",
    "recommend_for_text",
]
