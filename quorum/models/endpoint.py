"""Which endpoint serves the models, and a check of it before a run.

`endpoint(settings)` says what the configured OpenAI-compatible server (or the embedded
model) accepts: structured output, tool calls, timeouts, the output cap. `preflight` asks it
once, before anything is saved, whether it answers and serves the models a run names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from quorum import model_files
from quorum.settings import Settings, get_settings

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    pass


@dataclass(frozen=True)
class Endpoint:
    """What kind of server a run's models are on, and what it supports."""

    embedded: bool
    structured: Literal["json_schema", "json_object"]
    tools: Literal["native", "json"]
    max_tokens: int
    timeout: float
    """Seconds per request."""
    short_strings: bool = False
    """Its model needs short bounds on every string of a structured reply (see `_for_grammar`)."""


def endpoint(settings: Settings) -> Endpoint:
    """The kind of endpoint the settings name: the embedded model when they name none."""
    is_embedded = settings.base_url is None and settings.api_key is None
    is_openai = not is_embedded and (
        settings.base_url is None or "api.openai.com" in settings.base_url
    )
    structured, tools = settings.structured_output, settings.tool_calling
    return Endpoint(
        embedded=is_embedded,
        structured=(
            structured if structured != "auto" else "json_schema" if is_openai else "json_object"
        ),
        tools=tools if tools != "auto" else "json" if is_embedded else "native",
        max_tokens=(
            settings.embedded_max_output_tokens
            if is_embedded and "max_output_tokens" not in settings.model_fields_set
            else settings.max_output_tokens
        ),
        # The embedded model answers one request at a time at a few tokens per second on a
        # small CPU: parallel workers' requests wait in its queue for minutes, not seconds.
        timeout=(
            settings.embedded_timeout
            if is_embedded and "timeout" not in settings.model_fields_set
            else settings.timeout
        ),
        short_strings=(
            is_embedded
            and settings.embedded_model_path is None
            and model_files.MODELS[settings.embedded_model].short_strings
        ),
    )


def current_endpoint() -> Endpoint:
    """The endpoint of this process's settings."""
    return endpoint(get_settings())
