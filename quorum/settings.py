"""Process-wide settings: the one place Quorum reads the environment.

Everything here has a `QUORUM_` variable (see `.env.example`). Per-run choices such as the
model for one agent or a step limit live in `quorum.context.QuorumContext`, which beats these
defaults; settings are what a deployment fixes once: where the model endpoint is, the key
for it, and where checkpoints are kept.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_retries: int = Field(default=2, ge=0, description="Client retries per model request.")
    max_output_tokens: int = Field(default=1024, gt=0, description="Cap on one reply.")
    structured_output: Literal["auto", "json_schema", "json_object"] = Field(
        default="auto",
        description=(
            "How structured output is requested: OpenAI's strict json_schema, or a "
            "json_object with a schema (llama.cpp). auto picks json_schema for api.openai.com "
            "and json_object for any other endpoint."
        ),
    )
    data_dir: Path = Field(default=Path(".quorum"), description="Where Quorum keeps its data.")
    database: str | None = Field(
        default=None,
        description=(
            "Checkpoint store: a SQLite file path, or a postgresql:// URL. "
            "Default: <data_dir>/quorum.db."
        ),
    )

    @property
    def database_target(self) -> str:
        """The checkpoint store to open: the setting, or the default SQLite file."""
        return self.database or str(self.data_dir / "quorum.db")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
