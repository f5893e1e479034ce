"""Generative-LLM interface: ``generate(prompt) -> text`` with three backends.

- `TemplateLLM` (the default): deterministic; returns the prompt's draft, which recsight always
  builds from evidence by a template. Nothing is invented.
- `OpenAIChatLLM`: an OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, Ollama,
  vLLM, llama.cpp's server); the key, if needed, from an environment variable.
- `GGUFLLM`: a local GGUF model file, run by llama-cpp-python when it is installed, else by
  transformers + gguf + accelerate (no compiler needed, slower to load).

Generated text only rewords the draft; callers check it against the evidence
(`recsight.llm.explain.check_grounding`) and fall back to the draft when it fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recsight.errors import InputError
from recsight.llm.encoders import endpoint_url, post_json

#: Environment variable holding the API key of `--llm-url` endpoints.
API_KEY_ENV = "RECSIGHT_LLM_API_KEY"

SYSTEM_REWORD = (
    "You reword short texts for a recommender system. Rewrite the draft as one fluent "
    "sentence in the same language. Use only the facts given: mention no title, name or "
    "category that is not in the facts, and keep titles exactly as written, in double quotes."
)


@dataclass(frozen=True)
class Prompt:
    """What a backend receives: instructions, the facts, and the template draft to reword."""

    system: str
    facts: tuple[str, ...]
    draft: str

    @property
    def user(self) -> str:
        facts = "\n".join(f"- {f}" for f in self.facts)
        return f"Facts:\n{facts}\n\nDraft: {self.draft}\n\nRewritten sentence:"


def reword_prompt(draft: str, facts: list[str] | tuple[str, ...]) -> Prompt:
    """The standard prompt: reword `draft` using only `facts`."""
    return Prompt(SYSTEM_REWORD, tuple(facts), draft)


class LLM(Protocol):
    """A text generator. `name` says which backend answered (shown with explanations)."""

    name: str

    def generate(self, prompt: Prompt | str) -> str:
        """Text for `prompt` (a plain string is sent as the user message, no system text)."""
        ...


def _messages(prompt: Prompt | str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]


def _clean(text: str) -> str:
    """First paragraph of a generation, without a leading 'Draft:'-style label."""
    text = text.strip().split("\n\n")[0].strip()
    for label in ("Rewritten sentence:", "Draft:", "Sentence:"):
        if text.startswith(label):
            text = text[len(label) :].strip()
    return text


class TemplateLLM:
    """Deterministic backend: the draft itself (a plain-string prompt comes back unchanged)."""

    name = "template"

    def generate(self, prompt: Prompt | str) -> str:
        return prompt if isinstance(prompt, str) else prompt.draft


class OpenAIChatLLM:
    """An OpenAI-compatible chat endpoint; `url` with or without ``/v1``."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str | None = API_KEY_ENV,
        max_tokens: int = 120,
        timeout: float = 60.0,
    ):
        self.url = endpoint_url(url, "chat/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.name = f"openai:{model}"

    def generate(self, prompt: Prompt | str) -> str:
        payload = {
            "model": self.model,
            "messages": _messages(prompt),
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        out = post_json(self.url, payload, self.api_key_env, self.timeout)
        try:
            return _clean(str(out["choices"][0]["message"]["content"]))
        except (KeyError, IndexError, TypeError):
            raise InputError(f"{self.url}: answer is not a chat completion") from None


class GGUFLLM:
    """A local GGUF chat model (greedy decoding, one thread by default)."""

    def __init__(self, path: str | os.PathLike[str], max_tokens: int = 60, threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such GGUF file (--llm-gguf)")
        self.max_tokens = max_tokens
        self.threads = threads
        self.name = f"gguf:{self.path.name}"
        self._model: Any = None
        self._runtime = ""

    def _load(self) -> None:
        try:
            from llama_cpp import Llama

            self._model = Llama(
                model_path=str(self.path), n_threads=self.threads, n_ctx=1024, verbose=False
            )
            self._runtime = "llama_cpp"
            return
        except ImportError:
            pass
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise InputError(
                "--llm-gguf needs llama-cpp-python, or transformers + gguf + accelerate "
                "(pip install 'recsight[gguf]')"
            ) from None
        folder, file = str(self.path.parent), self.path.name
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=file, dtype=torch.float32
            )
        except (ImportError, ValueError) as exc:
            raise InputError(f"{self.path}: cannot load this GGUF file ({exc})") from None
        self._model = (tok, model.eval())
        self._runtime = "transformers"

    def generate(self, prompt: Prompt | str) -> str:
        if self._model is None:
            self._load()
        messages = _messages(prompt)
        if self._runtime == "llama_cpp":
            out = self._model.create_chat_completion(
                messages=messages, max_tokens=self.max_tokens, temperature=0.0
            )
            return _clean(out["choices"][0]["message"]["content"])
        import torch

        tok, model = self._model
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not torch.is_tensor(ids):
            ids = ids["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_tokens,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
        return _clean(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def make_llm(url: str | None = None, model: str | None = None, gguf: str | None = None) -> LLM:
    """The backend for the CLI options ``--llm-url/--llm-model`` or ``--llm-gguf``; neither
    gives the deterministic template backend."""
    if url and gguf:
        raise InputError("--llm-url and --llm-gguf: give one of them, not both")
    if url:
        if not model:
            raise InputError("--llm-model: required with --llm-url (the model to ask for)")
        return OpenAIChatLLM(url, model)
    if model:
        raise InputError("--llm-model: only meaningful with --llm-url")
    if gguf:
        return GGUFLLM(gguf)
    return TemplateLLM()
