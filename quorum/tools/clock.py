"""A clock tool: the current date and time, since a model does not know what day it is."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from quorum.tools.contract import ToolError, agent_tool


class Now(BaseModel):
    """The current moment."""

    iso: str = Field(description="ISO 8601 date and time with offset.")
    timezone: str = Field(description="The IANA time zone used.")
    weekday: str = Field(description="Day of the week.")


@agent_tool()
async def current_time(timezone: str = "UTC") -> Now:
    """Tell the current date and time in an IANA time zone.

    Use for: questions about today, now, deadlines or how long ago something was.
    Do not use for: historical dates or date arithmetic (use calculator on numbers).
    Example: current_time(timezone="Europe/Paris")
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ToolError(
            f"unknown time zone {timezone!r}",
            retryable=False,
            suggestion="use an IANA name such as 'UTC' or 'America/New_York'",
        ) from error
    now = datetime.now(zone)
    return Now(iso=now.isoformat(timespec="seconds"), timezone=timezone, weekday=now.strftime("%A"))


TOOLS = [current_time]
