"""Grounded one-sentence explanations of recommendations, and the check that keeps them grounded.

Evidence comes from the model's own attribution: `Recommender.explain` / `explain_history`
return the user's history items that contributed most to the recommended item's score (kNN
neighbours, factor-model per-item contributions, embedding similarity for content and sequence
models). A deterministic template turns that evidence into the draft sentence. A generative
backend (`recsight.llm.generate`) may only reword the draft; `check_grounding` rejects any text
that names an item or category outside the evidence (or quotes a name that is not one of the
evidence names, which is how invented titles show up), and the draft is used instead.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsight.errors import InputError
from recsight.llm.generate import LLM, TemplateLLM, reword_prompt
from recsight.models.base import Recommender

#: Longest name, in tokens, looked for in generated text.
_MAX_NAME_TOKENS = 12
#: Quoted spans: "..." “...” 《...》 «...» 「...」 『...』.
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|《([^》]+)》|«([^»]+)»|「([^」]+)」|『([^』]+)』')
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|die|der|das|el)$", re.IGNORECASE)
#: Words that may join capitalised words inside a title ("Lord of the Rings").
_CONNECTORS = {"of", "the", "and", "in", "a", "an", "to", "on", "for", "at", "with", "&"}


@dataclass
class Evidence:
    """One history item behind a recommendation and its contribution to the score."""

    item_id: str
    title: str
    category: str | None
    weight: float


@dataclass
class Explanation:
    """A one-sentence explanation. `grounded`: the sentence rests on the user's own history
    (False when the model gave no attribution). `backend` wrote the text; `rejected` says why
    a generated text was replaced by the template."""

    text: str
    evidence: list[Evidence]
    grounded: bool
    backend: str
    rejected: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()))


def name_variants(name: str) -> list[str]:
    """A catalog name and the short forms people write: without a trailing "(1995)" and with
    a trailing article moved to the front ("Usual Suspects, The" -> "The Usual Suspects")."""
    out = [name]
    base = _YEAR.sub("", name).strip()
    m = _ARTICLE.match(base)
    for v in (base, f"{m.group(2)} {m.group(1)}" if m else None, m.group(1) if m else None):
        if v and v not in out:
            out.append(v)
    return out


@dataclass
class Catalog:
    """Item titles and categories, indexed for the grounding check and for evidence lookup."""

    titles: dict[str, str]
    categories: dict[str, str | None]
    tags: dict[str, list[str]]
    names: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Catalog:
        """From a store's items frame (`item_id` plus any of title, category, tags)."""
        if "item_id" not in items.columns:
            raise InputError("items: expected an item_id column")
        ids = items["item_id"].astype(str).tolist()
        titles = _column(items, "title", ids)
        cats = _column(items, "category", ids)
        tag_col = items["tags"] if "tags" in items.columns else [None] * len(ids)
        tags = {
            i: [str(t) for t in v] if isinstance(v, (list, tuple, np.ndarray)) else []
            for i, v in zip(ids, tag_col, strict=True)
        }
        cat = cls(
            titles={i: t or i for i, t in titles.items()},
            categories=cats,
            tags=tags,
        )
        words = {c for c in cats.values() if c} | {t for ts in tags.values() for t in ts}
        for title in cat.titles.values():
            cat.names.update(_tokens(v) for v in name_variants(title))
        cat.names.update(_tokens(w) for w in words)
        cat.names = {n for n in cat.names if _distinctive(n)}
        return cat

    def describe(self, item_id: str) -> list[str]:
        """The names a sentence about `item_id` may use: its title forms, category and tags."""
        out = name_variants(self.titles.get(item_id, item_id))
        if self.categories.get(item_id):
            out.append(str(self.categories[item_id]))
        return out + self.tags.get(item_id, [])


def _column(items: pd.DataFrame, col: str, ids: list[str]) -> dict[str, str | None]:
    if col not in items.columns:
        return dict.fromkeys(ids)
    return {
        i: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        for i, v in zip(ids, items[col], strict=True)
    }


def _distinctive(name: tuple[str, ...]) -> bool:
    """Whether a name is specific enough to count as a mention: one Latin word needs 4+
    letters (so "Up" or "It" do not flag ordinary words); CJK names need 2+ characters."""
    if not name:
        return False
    if len(name) > 1:
        return True
    return len(name[0]) >= (2 if _TOKEN.fullmatch(name[0][0]) and not name[0].isascii() else 4)


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def check_grounding(text: str, allowed: Iterable[str], catalog: Catalog) -> str | None:
    """Why `text` is not grounded in the `allowed` names, or None when it is.

    Rejected: a quoted span that is not (part of) an allowed name; any catalog title, category
    or tag mentioned that is not part of an allowed name; a run of two or more capitalised words
    (a title-like name the catalog may not even have) that is not part of an allowed name.
    """
    allowed_tok = [_tokens(a) for a in allowed if a]

    def is_allowed(tok: tuple[str, ...]) -> bool:
        return any(_contains(a, tok) for a in allowed_tok)

    if not text.strip():
        return "empty text"
    for m in _QUOTED.finditer(text):
        span = next(g for g in m.groups() if g)
        if not is_allowed(_tokens(span)):
            return f"quotes {span!r}, which is not in the evidence"
    tokens = _tokens(text)
    for n in range(min(_MAX_NAME_TOKENS, len(tokens)), 0, -1):
        for i in range(len(tokens) - n + 1):
            gram = tokens[i : i + n]
            if gram in catalog.names and not is_allowed(gram):
                return f"names {' '.join(gram)!r}, which is not in the evidence"
    for run in _capitalised_runs(text):
        if not is_allowed(_tokens(run)):
            return f"names {run!r}, which is not in the evidence"
    return None


def _capitalised_runs(text: str) -> list[str]:
    """Runs of 2+ capitalised Latin words, connectors like "of the" allowed inside. A
    sentence's first word is capitalised anyway, so it is left out of a run it starts."""
    runs: list[str] = []
    current: list[str] = []
    sentence_start = True

    def close() -> None:
        while current and not current[-1][0].isupper():
            current.pop()
        if sum(w[0].isupper() for w in current) >= 2:
            runs.append(" ".join(current))
        current.clear()

    for word in re.findall(r"[^\W\d_][\w'’-]*|[^\w\s'’-]|\d+", text):
        if not word[0].isalpha():  # punctuation and numbers end a run
            close()
            sentence_start = sentence_start or word in ".!?;:。！？；："
            continue
        if sentence_start:
            sentence_start = False
            continue
        if word[0].isupper() and word.isascii() or current and word.lower() in _CONNECTORS:
            current.append(word)
        else:
            close()
    close()
    return runs


def _quote(title: str) -> str:
    return f'"{title}"'


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def template_explanation(
    item_title: str, item_category: str | None, evidence: list[Evidence]
) -> str:
    """The deterministic sentence for a recommendation and its evidence."""
    if not evidence:
        return f"{_quote(item_title)} is recommended, but nothing in your history explains it."
    names = _join([_quote(e.title) for e in evidence])
    shared = item_category and any(e.category == item_category for e in evidence)
    tail = f" (also {item_category})" if shared else ""
    return f"{_quote(item_title)} is recommended because you liked {names}{tail}."


def explain_recommendation(
    model: Recommender,
    user_or_history: str | Sequence[str],
    item: str,
    items_frame: pd.DataFrame | Catalog,
    llm: LLM | None = None,
    top: int = 3,
    weights: Sequence[float] | None = None,
) -> Explanation:
    """A grounded one-sentence explanation of why `model` recommends `item`.

    `user_or_history` is a known user id or a list of item ids (a new user's history, with
    optional per-event `weights` as the model's `explain_history` takes them). The
    evidence is the model's own attribution (its `explain`); with `llm`, the template draft is
    reworded and the result must pass `check_grounding`, else the draft is returned.
    """
    catalog = items_frame if isinstance(items_frame, Catalog) else Catalog.from_items(items_frame)
    try:
        if isinstance(user_or_history, str):
            pairs = model.explain(user_or_history, item, top=top)
        else:
            pairs = model.explain_history(list(user_or_history), item, top=top, weights=weights)
    except NotImplementedError:
        pairs = []
    evidence = [
        Evidence(i, catalog.titles.get(i, i), catalog.categories.get(i), round(float(w), 6))
        for i, w in pairs
    ]
    title = catalog.titles.get(str(item), str(item))
    category = catalog.categories.get(str(item))
    draft = template_explanation(title, category, evidence)
    grounded = bool(evidence)
    if llm is None or isinstance(llm, TemplateLLM):
        return Explanation(draft, evidence, grounded, "template")
    allowed = catalog.describe(str(item))
    allowed += [n for e in evidence for n in catalog.describe(e.item_id)]
    facts = [f'Recommended item: "{title}"' + (f" (category {category})" if category else "")]
    facts += [
        f'The user liked: "{e.title}"' + (f" (category {e.category})" if e.category else "")
        for e in evidence
    ]
    try:
        text = llm.generate(reword_prompt(draft, facts))
    except InputError as exc:
        return Explanation(draft, evidence, grounded, "template", f"{llm.name} failed: {exc}")
    reason = check_grounding(text, allowed, catalog)
    if reason is not None:
        return Explanation(draft, evidence, grounded, "template", f"{llm.name} text {reason}")
    return Explanation(text, evidence, grounded, llm.name)
