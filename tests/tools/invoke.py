"""Calling a registered tool the way an agent does, through `call_tool`."""

from __future__ import annotations

import json
from typing import Any

from quorum.tools import all_tools
from quorum.tools.contract import call_tool, unfenced


async def invoke(name: str, **args: Any) -> tuple[str, dict[str, Any]]:
    """Run tool `name` with `args`: the message status and its JSON content.

    What a tool from outside returns is read inside its untrusted-data fence. An output too
    long for the cap is not JSON any more; it comes back as {"cut": text}.
    """
    message = await call_tool(all_tools(), {"name": name, "args": args, "id": "t1"})
    text = unfenced(message.text)
    try:
        return message.status, json.loads(text)
    except json.JSONDecodeError:
        return message.status, {"cut": text}
