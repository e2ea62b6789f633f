"""How the evaluator runs a tower over many batches: its precision, tokenising the next batch
while this one runs, and a smaller batch after a GPU out-of-memory error.

``--precision bf16`` runs the towers under ``torch.autocast`` in bfloat16 (GPUs, and CPUs with
AMX or AVX-512 bf16 units); embeddings are normalised, scored and ranked in float32. The default
``fp32`` gives embeddings equal to the model's own fp32 encoders.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

from mclip.config import ConfigError
from mclip.models.adapters.base import TokenizingAdapter

PRECISIONS = ("fp32", "bf16")
TOKEN_WINDOW = 8192
"""Texts tokenised and sorted by token length together (the next window is tokenised while one
runs)."""


def check_precision(precision: str) -> str:
    """``precision`` if known, else a ConfigError naming the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the towers run in: nothing for fp32, bf16 autocast on ``device`` for bf16."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def model_device(model) -> torch.device:
    """Where an adapter's weights live (the CPU for objects without parameters)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def run_or_halve(
    run: Callable[[Any], torch.Tensor],
    items: Sequence[Any] | torch.Tensor,
    said: Callable[[str], None],
    first: Callable[[Any], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int | None]:
    """(``run(items)``, None) when the items ran whole; after an out-of-memory error they run in
    two halves (recursively, down to one item), the rows are concatenated in order, and the
    second value is the largest part size that ran. ``first``: what to try on the whole
    ``items`` instead of ``run`` (e.g. prepared inputs)."""
    try:
        return (first or run)(items), None
    except torch.OutOfMemoryError:
        if len(items) < 2:
            raise
    # retried after the except block: its traceback would keep the failed pass's tensors alive
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(items) // 2
    said(f"out of memory at batch size {len(items)}: trying {half}")
    head, fitted_head = run_or_halve(run, items[:half], said)
    tail, fitted_tail = run_or_halve(run, items[half:], said)
    fitted = min(
        half if fitted_head is None else fitted_head,
        len(items) - half if fitted_tail is None else fitted_tail,
    )
    return torch.cat([head, tail]), fitted


class _Inline(Executor):
    """Runs each submitted call at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered by .result(), as a thread's would be
            future.set_exception(error)
        return future


def tokenizer_pool(device: torch.device) -> Executor:
    """Where tokenisation runs: a thread beside a GPU's forward pass; inline on the CPU, where
    the forward pass's threads use every core and a tokenizer thread among them stalls them
    (24,000 English prompts on 2 CPUs: 5,200 texts/s with the thread, 6,800 inline)."""
    if device.type == "cpu":
        return _Inline()
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mclip-tokenize")


def tokenizes_apart(model) -> bool:
    """Whether ``model`` encodes as ``encode_tokens(tokenize(texts))``: an adapter whose
    ``encode_text`` is the base class's (a subclass that changes ``encode_text`` is called
    through it)."""
    return (
        isinstance(model, TokenizingAdapter)
        and type(model).encode_text is TokenizingAdapter.encode_text
    )


def encode_text_batches(
    model,
    texts: list[str],
    batch_size: int,
    precision: str = "fp32",
    said: Callable[[str], None] = lambda m: None,
) -> list[torch.Tensor]:
    """Embeddings float32 [b, d] on the CPU of consecutive batches of ``texts``.

    Adapters that tokenise apart (:func:`tokenizes_apart`) have the next batch tokenised (on a GPU
    run, in a thread: :func:`tokenizer_pool`) while the current one runs (the tokenizers are Python;
    the forward pass releases the GIL); those with ``tokenize_by_length`` (open_clip, whose tokens
    are padded to the context) are tokenised once and batched by the length each text runs at. After
    an out-of-memory error the batch size stays at the size that fitted.
    """
    if not texts:
        return []
    device = model_device(model)
    split = tokenizes_apart(model)

    def whole(batch: Sequence[str]) -> torch.Tensor:
        with autocast(device, precision):
            return model.encode_text(list(batch)).float().cpu()

    if not split:
        return _halving_loop(whole, texts, batch_size, said)[0]
    if hasattr(model, "tokenize_by_length"):  # tokenised once, batched by token length
        return [_by_token_length(model, texts, batch_size, device, precision, said)]
    chunks: list[torch.Tensor] = []
    with tokenizer_pool(device) as pool:

        def halves(batch: Sequence[str]) -> torch.Tensor:  # tokenised by the pool's one thread
            tokens = pool.submit(model.tokenize, list(batch)).result()
            with autocast(device, precision):
                return model.encode_tokens(tokens).float().cpu()

        start, size = 0, batch_size
        ahead = pool.submit(model.tokenize, texts[start : start + size])
        while start < len(texts):
            end = min(start + size, len(texts))
            tokens = ahead.result()
            if end < len(texts):
                ahead = pool.submit(model.tokenize, texts[end : end + size])

            def prepared(_: Sequence[str], tokens=tokens) -> torch.Tensor:
                with autocast(device, precision):
                    return model.encode_tokens(tokens).float().cpu()

            rows, fitted = run_or_halve(halves, texts[start:end], said, first=prepared)
            chunks.append(rows)
            if fitted is not None and fitted < size:  # what is tokenised ahead has the old size
                ahead.cancel()
                size = fitted
                if end < len(texts):
                    ahead = pool.submit(model.tokenize, texts[end : end + size])
            start = end
    return chunks


def _by_token_length(
    model,
    texts: list[str],
    batch_size: int,
    device: torch.device,
    precision: str,
    said: Callable[[str], None],
) -> torch.Tensor:
    """Windows of TOKEN_WINDOW texts (the caller's texts are sorted by characters, so a window
    holds texts of similar length), each tokenised (on a GPU run in a thread, while the one before
    runs) and batched by the length each text runs at."""
    windows = [texts[i : i + TOKEN_WINDOW] for i in range(0, len(texts), TOKEN_WINDOW)]
    parts, size = [], batch_size
    with tokenizer_pool(device) as pool:
        ahead = pool.submit(model.tokenize_by_length, windows[0])
        for index in range(len(windows)):
            tokens, order = ahead.result()
            if index + 1 < len(windows):
                ahead = pool.submit(model.tokenize_by_length, windows[index + 1])

            def run(rows: Sequence[int], tokens=tokens) -> torch.Tensor:
                with autocast(device, precision):
                    return model.encode_tokens(tokens[torch.as_tensor(rows)]).float().cpu()

            chunks, size = _halving_loop(run, order.tolist(), size, said)
            rows = torch.cat(chunks)
            part = torch.empty_like(rows)
            part[order] = rows
            parts.append(part)
    return torch.cat(parts)


def _halving_loop(
    run: Callable[[Sequence], torch.Tensor], items: list, size: int, said: Callable[[str], None]
) -> tuple[list[torch.Tensor], int]:
    """(rows of consecutive parts of ``items``, the part size that fits at the end)."""
    chunks, start = [], 0
    while start < len(items):
        rows, fitted = run_or_halve(run, items[start : start + size], said)
        chunks.append(rows)
        start, size = start + len(rows), size if fitted is None else min(size, fitted)
    return chunks, size
