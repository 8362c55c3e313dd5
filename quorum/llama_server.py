"""What Quorum adds to llama-cpp-python's server, inside the embedded model's server process.

`quorum.embedded` starts the server under a small script that calls these before the server
module runs. Each wraps or replaces a piece of llama-cpp-python, which has no hook for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast


def count_streamed_usage() -> None:
    """End each streamed chat reply of this (server) process with its usage, as OpenAI does.

    llama-cpp-python's server streams no usage, so a streamed reply (a run whose answer is
    shown as it is written) would count no tokens: budgets and the ledger would miss it.
    The counts are taken where its own unstreamed usage comes from: the prompt's tokens
    and each token generated but an end-of-generation one, as `Llama.generate` sees them
    (requests to one model run one at a time, under the server's lock).
    Written by hand: the server has no hook for it, so this wraps the two methods it calls.
    """
    import llama_cpp

    chat = llama_cpp.Llama.create_chat_completion
    generate = llama_cpp.Llama.generate

    def counted_generate(
        self: llama_cpp.Llama, tokens: Sequence[int], *args: Any, **kwargs: Any
    ) -> Iterator[int]:
        counts = self.__dict__["_quorum_counts"] = [len(tokens), 0]
        for token in generate(self, tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                counts[1] += 1
            yield token

    def create_chat_completion(self: llama_cpp.Llama, *args: Any, **kwargs: Any) -> Any:
        result = chat(self, *args, **kwargs)
        return _with_usage(self, cast(Iterator[Any], result)) if kwargs.get("stream") else result

    llama_cpp.Llama.generate = counted_generate  # type: ignore[method-assign,assignment]
    llama_cpp.Llama.create_chat_completion = create_chat_completion  # type: ignore[method-assign]


def count_cache_entries_whole() -> None:
    """Make the prompt cache's capacity bound all that its entries hold (in the server process).

    llama-cpp-python's RAM cache counts an entry as its llama.cpp state only, not the copy of
    the logits array that comes with each (a batch of rows: 311 MB for the default model,
    whatever the prompt's length). A "1 GiB" cache so grew by about 1 GB a request, until the
    kernel killed the server at 23 GB. Written by hand: the cache's size is a property the
    server reads, with no setting for what it counts.
    """
    from llama_cpp.llama_cache import LlamaRAMCache

    def whole(self: LlamaRAMCache) -> int:
        return sum(
            state.llama_state_size + state.scores.nbytes + state.input_ids.nbytes
            for state in self.cache_state.values()
        )

    LlamaRAMCache.cache_size = property(whole)  # type: ignore[assignment,method-assign]


def _with_usage(llama: Any, chunks: Iterator[Any]) -> Iterator[Any]:
    last = None
    for chunk in chunks:
        last = chunk
        yield chunk
    if last is None:
        return
    prompt, generated = llama.__dict__.pop("_quorum_counts", (0, 0))
    yield {
        "id": last["id"],
        "object": "chat.completion.chunk",
        "created": last["created"],
        "model": last["model"],
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
        },
    }
