"""Topics from item text: the structure a catalog without categories lacks, read from its text.

1. Each item's text (`recsight.llm.encoders.item_texts`) is embedded with the default encoder,
   through the embedding cache in the store.
2. The embeddings are clustered with k-means; the number of topics is the k of the best
   silhouette (cosine) over `k_grid` on a seeded sample, unless given. An optional second,
   coarser level groups the topics' centroids (Ward linkage), its size chosen the same way.
3. Each topic is named by its most distinctive words: class-based TF-IDF (BERTopic's c-TF-IDF)
   over the texts of its items. Latin-script text is split into words (English stop words
   left out); Chinese, Japanese and Korean ideograph runs, which have no spaces, give their
   2- to 4-character n-grams, so a name is a phrase that occurs in the texts.
4. A configured generative LLM may reword a name; the new name is kept only when every word
   of it (and every ideograph run, as a substring) occurs in the topic's own item texts
   (`check_label`), otherwise the template name stays.

`build_topics` runs all of it on a store and writes the result as derived item attributes
(`recsight.data.store.TOPICS_TABLE`, with the encoder key and text hash per item, and the
catalog's hash in the store's meta); `topics_status` says whether they are current.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsight.errors import InputError

#: Candidate numbers of topics for ``k="auto"`` (those below the number of distinct texts).
K_GRID = (4, 6, 8, 10, 12, 15, 19, 24, 30, 40, 50)
#: Items the k-means models are fitted on (the rest are assigned to the nearest centroid) and
#: items the silhouette is computed on: both seeded samples.
FIT_SAMPLE = 20_000
SILHOUETTE_SAMPLE = 4_000
#: Words in a template topic name.
LABEL_WORDS = 3
#: Longest n-gram taken from a run of ideographs.
CJK_MAX_GRAM = 4

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
# A word: letters (any script but the ideographs above) joined by inner apostrophes/hyphens.
_WORD = re.compile(rf"[^\W\d_{_CJK}]+(?:['’-][^\W\d_{_CJK}]+)*|\d+")
_RUN = re.compile(f"[{_CJK}]+|" + _WORD.pattern)


@functools.cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", str(text)).casefold()


def _is_cjk(ch: str) -> bool:
    return bool(_CJK_RUN.match(ch))


def tokenize(text: str) -> list[str]:
    """The terms a topic name is chosen from: casefolded words of 2+ letters that are not
    English stop words or numbers, and the 2..`CJK_MAX_GRAM`-grams of each ideograph run (a
    run of one ideograph is itself a term)."""
    stop = _stop_words()
    out: list[str] = []
    for m in _RUN.finditer(_norm(text)):
        run = m.group()
        if _is_cjk(run[0]):
            if len(run) == 1:
                out.append(run)
                continue
            for n in range(2, min(CJK_MAX_GRAM, len(run)) + 1):
                out.extend(run[i : i + n] for i in range(len(run) - n + 1))
        elif len(run) >= 2 and not run.isdigit() and run not in stop:
            out.append(run)
    return out


def _overlaps(a: str, b: str) -> bool:
    """Whether two terms say the same thing twice: one contains the other, or (ideographs)
    they share a character, as the overlapping n-grams of one phrase do ("派对" and "对岛"
    from "派对岛": the second is a fragment, not a second word)."""
    if a in b or b in a:
        return True
    return _is_cjk(a[0]) and _is_cjk(b[0]) and bool(set(a) & set(b))


def _join(words: list[str]) -> str:
    # not ", ": summaries list several topics with commas between them
    return " / ".join(words)


def class_tfidf(
    texts: Sequence[str], labels: np.ndarray, n_topics: int
) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
    """c-TF-IDF of every term in every topic: ``tf(t, c) * log(1 + A / f(t))`` with ``tf`` the
    term's share of the topic's terms, ``f(t)`` its count over all topics and ``A`` the mean
    number of terms per topic (Grootendorst 2022). Returns (scores, vocabulary, and the
    number of the topic's items that contain each term, same shape as the scores)."""
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    keep = labels >= 0
    docs = [t for t, k in zip(texts, keep, strict=True) if k]
    vec = CountVectorizer(analyzer=tokenize)
    try:
        x = vec.fit_transform(docs).tocsc()
    except ValueError:  # no term at all (texts of stop words or digits only)
        empty = sp.csr_matrix((n_topics, 0))
        return empty, [], empty
    vocab = list(vec.get_feature_names_out())
    if len(docs) >= 10:
        # a term in more than half of all items ("perfect for", "出品") names no topic, nor
        # does an ideograph n-gram that contains one ("岛出品": a brand's tail + the filler)
        df = np.asarray((x > 0).sum(axis=0)).ravel()
        filler = {vocab[j] for j in np.flatnonzero(df > 0.5 * len(docs))}
        cjk_filler = [f for f in filler if _is_cjk(f[0])]
        drop = [
            j for j, t in enumerate(vocab)
            if t in filler or (_is_cjk(t[0]) and any(f in t for f in cjk_filler))
        ]  # fmt: skip
        if drop:
            mask = np.ones(len(vocab))
            mask[drop] = 0.0
            x = x @ sp.diags(mask)
    x = x.tocsr()
    rows = labels[keep]
    onehot = sp.csr_matrix(
        (np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(n_topics, len(rows))
    )
    counts = (onehot @ x).tocsr().astype(float)
    present = (onehot @ (x > 0).astype(float)).tocsr()
    per_topic = np.asarray(counts.sum(axis=1)).ravel()
    per_term = np.asarray(counts.sum(axis=0)).ravel()
    avg = per_topic.mean()
    tf = sp.diags(1.0 / np.where(per_topic > 0, per_topic, 1.0)) @ counts
    idf = np.log1p(avg / np.where(per_term > 0, per_term, 1.0))
    return (tf @ sp.diags(idf)).tocsr(), vocab, present


def topic_words(
    texts: Sequence[str], labels: np.ndarray, n_topics: int, n_words: int = LABEL_WORDS
) -> list[list[str]]:
    """Each topic's most distinctive terms by c-TF-IDF, best first, a term left out when it
    repeats a better one (`_overlaps`) or occurs in fewer than two of the topic's items (in a
    topic of two or more items): one odd title does not name a topic."""
    scores, vocab, present = class_tfidf(texts, labels, n_topics)
    sizes = np.bincount(np.asarray(labels)[np.asarray(labels) >= 0], minlength=n_topics)
    out: list[list[str]] = []
    for c in range(n_topics):
        row, pres = scores.getrow(c), present.getrow(c).toarray().ravel()
        idx, val = row.indices, row.data
        # best score first; on equal scores the longer term (the whole phrase "蓝牙耳机" over
        # its pieces, which occur exactly as often), then by term: no dependence on hash order
        order = sorted(
            range(len(idx)), key=lambda j: (-round(val[j], 12), -len(vocab[idx[j]]), vocab[idx[j]])
        )
        need = min(2, int(sizes[c]))
        words: list[str] = []
        for j in order:
            term = vocab[idx[j]]
            if pres[idx[j]] < need or any(_overlaps(term, w) for w in words):
                continue
            words.append(term)
            if len(words) == n_words:
                break
        out.append(words)
    return out


def check_label(label: str, texts: Sequence[str]) -> str | None:
    """Why `label` is not grounded in `texts` (its topic's item texts), or None when it is:
    every word of the label must be a word of the texts and every ideograph run of it a
    substring of one of them (case and Unicode width ignored); punctuation is free."""
    if not label.strip():
        return "empty label"
    normed = [_norm(t) for t in texts]
    words = {m.group() for t in normed for m in _WORD.finditer(t)}
    for m in _RUN.finditer(_norm(label)):
        run = m.group()
        if _is_cjk(run[0]):
            if not any(run in t for t in normed):
                return f"uses {run!r}, which is not in the topic's item texts"
        elif run not in words:
            return f"uses {run!r}, which is not in the topic's item texts"
    return None


@dataclass
class Topic:
    """One topic: its level (1 fine, 2 coarse), number (0 the largest), name, the terms the
    template name is built from, its size in items, the coarse topic it belongs to (level 1
    with two levels), which backend wrote the name and, when an LLM's name was refused, why."""

    level: int
    topic: int
    label: str
    words: list[str]
    size: int
    parent: int | None = None
    backend: str = "template"
    rejected: str | None = None


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded sample of row numbers, sorted, all rows when there are not more than `size`."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """New number of each old topic number: by size, largest first (ties by old number), so
    the numbering is stable and meaningful."""
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    new = np.empty(k, dtype=int)
    new[order] = np.arange(k)
    return new


class TopicModel:
    """k-means topics over L2-normalised text embeddings, named by c-TF-IDF.

    Parameters:
        k: number of topics, or ``"auto"``: the best silhouette (cosine) over `k_grid`.
        levels: 1, or 2 for a coarser second level over the topics' centroids.
        seed: seeds the samples and k-means; the same seed and input give the same topics.
        k_grid: candidate k for ``"auto"`` (values not below the number of distinct texts
            are dropped).
        n_words: terms in a template name.

    Learned: `labels_` (topic per row, -1 for rows without text), `k_`, `silhouette_` (k ->
    score, for the candidates tried), `centroids_`, `coarse_` (level-2 topic per level-1
    topic, with two levels), `topics_` (`Topic` records, level 1 then level 2).
    """

    def __init__(
        self,
        k: int | str = "auto",
        levels: int = 1,
        seed: int = 0,
        k_grid: Sequence[int] = K_GRID,
        n_words: int = LABEL_WORDS,
    ):
        self.k = k
        self.levels = levels
        self.seed = seed
        self.k_grid = k_grid
        self.n_words = n_words

    def _check(self) -> None:
        if self.k != "auto" and not (isinstance(self.k, int) and self.k >= 1):
            raise InputError(f"--k {self.k!r}: expected 'auto' or a positive number of topics")
        if self.levels not in (1, 2):
            raise InputError(f"--levels {self.levels!r}: expected 1 or 2")

    def fit(self, embeddings: np.ndarray, texts: Sequence[str]) -> TopicModel:
        """Cluster the rows of `embeddings` (one per text; rows of empty texts get -1) and
        name the topics from `texts`."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from threadpoolctl import threadpool_limits

        self._check()
        texts = [str(t) for t in texts]
        if len(texts) != len(embeddings):
            raise InputError(f"topics: {len(texts)} texts but {len(embeddings)} embeddings")
        has_text = np.array([bool(t.strip()) for t in texts])
        rows = np.flatnonzero(has_text)
        if not len(rows):
            raise InputError("topics: no item has any text (title, description, tags, text)")
        x = np.asarray(embeddings, dtype=np.float32)[rows]
        distinct = len({texts[i] for i in rows})
        fit_idx = _sample(len(rows), FIT_SAMPLE, self.seed)
        sil_idx = fit_idx[_sample(len(fit_idx), SILHOUETTE_SAMPLE, self.seed + 1)]

        def kmeans(k: int) -> Any:
            # n_init=3 seeded restarts: one k-means++ start varies too much with the seed
            return KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(x[fit_idx])

        # One thread: on a shared machine OpenMP oversubscription costs far more than it gains.
        with threadpool_limits(1):
            if self.k == "auto":
                grid = [k for k in self.k_grid if 2 <= k < distinct] or [min(2, distinct)]
                self.silhouette_: dict[int, float] = {}
                best = None
                for k in grid:
                    km = kmeans(k)
                    lab = km.predict(x[sil_idx])
                    if len(set(lab)) < 2:
                        continue
                    score = float(silhouette_score(x[sil_idx], lab, metric="cosine"))
                    self.silhouette_[k] = round(score, 6)
                    if best is None or score > best[0]:
                        best = (score, k, km)
                km = best[2] if best is not None else kmeans(grid[0])
            else:
                self.silhouette_ = {}
                km = kmeans(min(int(self.k), distinct))
            k = km.n_clusters
            raw = km.predict(x)
        new = _by_size(raw, k)
        fine = new[raw]
        centroids = np.empty_like(km.cluster_centers_)
        centroids[new] = km.cluster_centers_
        self.k_ = k
        self.centroids_ = centroids
        self.labels_ = np.full(len(texts), -1, dtype=int)
        self.labels_[rows] = fine
        words = topic_words(texts, self.labels_, k, self.n_words)
        sizes = np.bincount(fine, minlength=k)
        self.topics_ = [
            Topic(1, c, _join(words[c]) or f"topic {c + 1}", words[c], int(sizes[c]))
            for c in range(k)
        ]
        self.coarse_: np.ndarray | None = None
        if self.levels == 2 and k >= 3:
            self._fit_coarse(texts, sizes)
        return self

    def _fit_coarse(self, texts: list[str], sizes: np.ndarray) -> None:
        """Level 2: Ward clustering of the level-1 centroids (weighted by nothing: a topic is
        a topic), the number of groups by silhouette over 2..k-1 (at most 12)."""
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.metrics import silhouette_score

        k = self.k_
        c = self.centroids_ / np.linalg.norm(self.centroids_, axis=1, keepdims=True)
        best = None
        for m in range(2, min(k - 1, 12) + 1):
            lab = AgglomerativeClustering(n_clusters=m, linkage="ward").fit_predict(c)
            score = float(silhouette_score(c, lab, metric="cosine"))
            if best is None or score > best[0]:
                best = (score, m, lab)
        assert best is not None  # k >= 3 gives at least m = 2
        _, m, lab = best
        # coarse topics numbered by their items, largest first
        self.coarse_ = _by_size(np.repeat(lab, sizes), m)[lab]
        item_coarse = np.where(self.labels_ >= 0, self.coarse_[np.maximum(self.labels_, 0)], -1)
        words = topic_words(texts, item_coarse, m, self.n_words)
        csize = np.bincount(item_coarse[item_coarse >= 0], minlength=m)
        for t in self.topics_:
            t.parent = int(self.coarse_[t.topic])
        self.topics_ += [
            Topic(2, g, _join(words[g]) or f"group {g + 1}", words[g], int(csize[g]))
            for g in range(m)
        ]

    def item_topics(self, level: int = 1) -> np.ndarray:
        """Topic per row at `level` (-1: no text)."""
        if level == 1 or self.coarse_ is None:
            return self.labels_
        return np.where(self.labels_ >= 0, self.coarse_[np.maximum(self.labels_, 0)], -1)


LABEL_SYSTEM = (
    "You name groups of catalog items. Give a short name (two to five words) for the group "
    "in the language of its items, using only words that appear in the facts. Answer with "
    "the name only."
)


def reword_labels(
    model: TopicModel,
    texts: Sequence[str],
    llm: Any,
    examples: int = 5,
) -> TopicModel:
    """Let `llm` (a `recsight.llm.generate.LLM`) rename each topic from its terms and a few of
    its item texts; a name that fails `check_label` against the topic's texts is refused and
    the template name stays (the reason kept in `Topic.rejected`)."""
    from recsight.llm.generate import Prompt, TemplateLLM

    if llm is None or isinstance(llm, TemplateLLM):
        return model
    texts = [str(t) for t in texts]
    for t in model.topics_:
        members = np.flatnonzero(model.item_topics(t.level) == t.topic)
        own = [texts[i] for i in members]
        facts = (f"distinctive words: {', '.join(t.words)}",) + tuple(
            f"item: {s[:160]}" for s in own[:examples]
        )
        try:
            text = llm.generate(Prompt(LABEL_SYSTEM, facts, t.label)).strip().strip("\"'“”")
        except InputError as exc:
            t.rejected = f"{llm.name} failed: {exc}"
            continue
        text = text.splitlines()[0].strip() if text else ""
        reason = "longer than 60 characters" if len(text) > 60 else check_label(text, own)
        if reason is None:
            t.label, t.backend = text, llm.name
        else:
            t.rejected = f"{llm.name} name {text[:60]!r} {reason}"
    return model


def catalog_hash(item_ids: Sequence[str], texts: Sequence[str]) -> str:
    """SHA-256 of the catalog's (item id, text) pairs in order: changes when any text does."""
    h = hashlib.sha256()
    for i, t in zip(item_ids, texts, strict=True):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()


@dataclass
class TopicsReport:
    """What `build_topics` did: the encoder, k and how it was chosen, the topics, and whether
    they were rebuilt (False: the stored ones were current)."""

    model: str
    catalog_hash: str
    n_items: int
    n_with_text: int
    k: int
    criterion: str
    silhouette: dict[str, float]
    seed: int
    levels: int
    rebuilt: bool
    topics: list[Topic] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _params(k: int | str, levels: int, seed: int, encoder_key: str) -> str:
    return json.dumps({"k": k, "levels": levels, "seed": seed, "model": encoder_key})


def stored_params(store: Any) -> dict[str, Any]:
    """k, levels and seed the stored topics were built with (defaults when there are none)."""
    raw = json.loads(store.meta("topics_params") or "{}")
    return {"k": raw.get("k", "auto"), "levels": raw.get("levels", 1), "seed": raw.get("seed", 0)}


def topics_status(store: Any) -> str:
    """``"categories"`` (the catalog has them: topics are optional), ``"no_text"``,
    ``"current"`` (stored topics match the catalog's texts), ``"stale"`` or ``"missing"``."""
    from recsight.llm.encoders import item_texts

    # one count in SQL first: `analyze` and `train` ask on every run, and most catalogs have
    # categories, so their items are never read for this
    columns = {r[0] for r in store.con.execute("DESCRIBE items").fetchall()}
    if "category" in columns:
        n_cat = store.con.execute("SELECT count(category) FROM items").fetchone()[0]
        if n_cat:
            return "categories"
    items = store.items_frame(topics=False)
    texts = item_texts(items)
    if not any(t.strip() for t in texts):
        return "no_text"
    stored = store.meta("topics_catalog_hash")
    if stored is None:
        return "missing"
    current = stored == catalog_hash(items.item_id.astype(str).tolist(), texts)
    return "current" if current else "stale"


def build_topics(
    store: Any,
    k: int | str = "auto",
    levels: int = 1,
    seed: int = 0,
    encoder: Any = None,
    llm: Any = None,
    force: bool = False,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> TopicsReport:
    """Topics of a writable store's catalog, stored as derived item attributes.

    Nothing is recomputed when the stored topics were built from the same texts with the same
    encoder and parameters (unless `force`). Embeddings go through the store's cache.
    """
    from recsight.llm.encoders import (
        EmbeddingCache,
        encode_texts,
        item_texts,
        make_encoder,
        text_hash,
    )

    step = on_step or (lambda _s: None)
    if store.read_only:
        raise InputError(f"{store.path}: topics are stored in the store; open it for writing")
    items = store.items_frame(topics=False)
    texts = item_texts(items)
    ids = items.item_id.astype(str).tolist()
    if not any(t.strip() for t in texts):
        raise InputError(
            "topics: no item has any text (title, description, tags or text columns); "
            "ingest items with --items FILE"
        )
    enc = encoder if encoder is not None else make_encoder()
    chash = catalog_hash(ids, texts)
    params = _params(k, levels, seed, enc.key)
    same = store.meta("topics_catalog_hash") == chash and store.meta("topics_params") == params
    if same and not force:
        return _stored_report(store, chash, len(ids), sum(bool(t.strip()) for t in texts))
    step(f"embedding {len(ids):,} item texts with {enc.key}")
    emb = encode_texts(enc, texts, EmbeddingCache(store.con), progress=progress)
    step("clustering")
    model = TopicModel(k=k, levels=levels, seed=seed).fit(emb, texts)
    if llm is not None:
        step(f"naming topics with {getattr(llm, 'name', 'llm')}")
        reword_labels(model, texts, llm)
    frames = []
    for level in (1, 2) if model.coarse_ is not None else (1,):
        lab = model.item_topics(level)
        names = {t.topic: t.label for t in model.topics_ if t.level == level}
        has = lab >= 0
        frames.append(
            pd.DataFrame(
                {
                    "item_idx": items.item_idx.to_numpy()[has].astype("int32"),
                    "item_id": np.asarray(ids, dtype=object)[has],
                    "level": level,
                    "topic": lab[has].astype("int32"),
                    "label": [names[c] for c in lab[has]],
                    "model": enc.key,
                    "text_hash": [text_hash(texts[i]) for i in np.flatnonzero(has)],
                }
            )
        )
    topics = pd.DataFrame([asdict(t) for t in model.topics_])
    report = TopicsReport(
        model=enc.key,
        catalog_hash=chash,
        n_items=len(ids),
        n_with_text=int((model.labels_ >= 0).sum()),
        k=model.k_,
        criterion="given" if k != "auto" else "silhouette (cosine) over " + _grid(model),
        silhouette={str(a): b for a, b in model.silhouette_.items()},
        seed=seed,
        levels=levels,
        rebuilt=True,
        topics=model.topics_,
    )
    store.replace_topics(
        pd.concat(frames, ignore_index=True),
        topics,
        {
            "topics_catalog_hash": chash,
            "topics_params": params,
            "topics_report": json.dumps({**report.to_dict(), "topics": []}),
        },
    )
    return report


def _grid(model: TopicModel) -> str:
    return "k in {" + ", ".join(str(k) for k in model.silhouette_) + "}"


def _stored_report(store: Any, chash: str, n_items: int, n_text: int) -> TopicsReport:
    info = json.loads(store.meta("topics_report") or "{}")
    topics = [
        Topic(**{k: (None if _isna(v) else v) for k, v in r.items()})
        for r in store.topics_frame().to_dict("records")
    ]
    for t in topics:
        t.words = list(t.words)
        t.parent = None if t.parent is None else int(t.parent)
    return TopicsReport(
        **{
            **info,
            "catalog_hash": chash,
            "n_items": n_items,
            "n_with_text": info.get("n_with_text", n_text),
            "rebuilt": False,
            "topics": topics,
        }
    )


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))
