"""The one seam that builds and calls chat models, a module per job.

- `endpoint`: which server answers (a configured OpenAI-compatible one, or the embedded
  model) and what it accepts;
- `client`: the ChatOpenAI for an agent (`load_chat_model`), and `preflight`;
- `call`: the one pipeline every request goes through (below);
- `structured`: replies held to a schema, with bounded repair;
- `actions`: turns that may act (native tool calls, or JSON actions), and reasoning first.

Every agent gets its model from `load_chat_model(agent, context)`: langchain-openai's
ChatOpenAI against the configured OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp, LM Studio), or against the embedded local model when none is configured. Tests
replace `client.load_chat_model` and nothing else (`quorum.testing`). The `ask*` helpers are how
agents talk to a model; `ask_structured` asks for JSON matching a pydantic schema in the form
the endpoint understands and lets the model repair an invalid reply a bounded number of
times; `ask` with tools uses native tool calls, or a grammar-constrained JSON action on
servers without them.

Every request goes through `call._invoke`, the one place that:
- replays a reply the journal already has (`quorum.journal`), and records a new one before
  the caller sees it;
- retries what a later attempt can fix (429, 5xx, timeouts, dropped connections, malformed
  bodies) with exponential backoff and jitter, honouring Retry-After, for at most
  `max_attempts` requests per call; the client's own retries are off, and no graph node has a
  retry policy, so nothing else retries a model call;
- turns every other failure into a `ModelError` that says what to change, with the
  endpoint's words redacted of every configured secret;
- meters the call for its agent (`quorum.metering`);
- waits for the endpoint's rate limiter and a free request slot before each request
  (`QUORUM_REQUESTS_PER_SECOND`, `QUORUM_MAX_CONCURRENT_REQUESTS`): one limiter per endpoint,
  shared by every agent and parallel worker, so a wide plan does not trip a provider's 429s.
- traces it as a model-call span (`quorum.telemetry`), when tracing is on.
"""

from __future__ import annotations

from quorum.models.actions import FINAL_ANSWER, REASONED_REQUEST, ask, ask_reasoned
from quorum.models.call import EMPTY_STREAM, RETRIED_STATUSES
from quorum.models.client import (
    AsyncRedactingTransport,
    RedactingTransport,
    load_chat_model,
    preflight,
    sample_seed,
)
from quorum.models.endpoint import Endpoint, current_endpoint, endpoint
from quorum.models.structured import (
    MAX_GRAMMAR_STRING,
    MAX_ITEMS,
    MAX_STRING,
    NUMBER_STEPS,
    PLACEHOLDERS,
    REPAIR_PROMPT,
    STRUCTURED_REPAIRS,
    ask_structured,
    hollow,
    hollow_fields,
    response_format,
    stated,
)

__all__ = [
    "EMPTY_STREAM",
    "FINAL_ANSWER",
    "MAX_GRAMMAR_STRING",
    "MAX_ITEMS",
    "MAX_STRING",
    "NUMBER_STEPS",
    "PLACEHOLDERS",
    "REASONED_REQUEST",
    "REPAIR_PROMPT",
    "RETRIED_STATUSES",
    "STRUCTURED_REPAIRS",
    "AsyncRedactingTransport",
    "Endpoint",
    "RedactingTransport",
    "ask",
    "ask_reasoned",
    "ask_structured",
    "current_endpoint",
    "endpoint",
    "hollow",
    "hollow_fields",
    "load_chat_model",
    "preflight",
    "response_format",
    "sample_seed",
    "stated",
]
