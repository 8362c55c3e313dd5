"""A clock tool: the current date and time, since a model does not know what day it is."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, Field

from quorum.tools.contract import ToolError, agent_tool


class Now(BaseModel):
    """The current moment."""

    iso: str = Field(description="ISO 8601 date and time with offset.")
    timezone: str = Field(description="The IANA time zone used.")
    weekday: str = Field(description="Day of the week.")


@agent_tool()
async def current_time(
    timezone: Annotated[
        str, Field(max_length=64, description="An IANA time zone name, e.g. 'Europe/Paris'.")
    ] = "UTC",
) -> Now:
    """Tell the current date and time in an IANA time zone.

    Use for: questions about today, now, deadlines or how long ago something was.
    Do not use for: historical dates or date arithmetic (use calculator on numbers).
    Example: current_time(timezone="Europe/Paris")
    """
    # Checked against the known names rather than handed to ZoneInfo, which reads a file
    # named after its argument and fails in as many ways as a path can.
    if timezone not in _zone_names():
        raise ToolError(
            f"unknown time zone {timezone[:64]!r}",
            retryable=False,
            suggestion="use an IANA name such as 'UTC' or 'America/New_York'",
        )
    # UTC needs no time zone database, so it works even on a machine without one.
    now = datetime.now(UTC if timezone == "UTC" else ZoneInfo(timezone))
    return Now(iso=now.isoformat(timespec="seconds"), timezone=timezone, weekday=now.strftime("%A"))


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


TOOLS = [current_time]
