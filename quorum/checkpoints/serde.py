"""Strict checkpoint deserialisation: only our own state types and LangGraph's safe ones.

LangGraph's default serializer imports and calls whatever class a checkpoint names, so anyone
who can write to the database could run code in every process that reads it. Quorum's
serializer allows only the pydantic models that appear in its patterns' state, found by
walking the state schemas, so a new state type is allowed without a list to keep in sync.
"""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel
from typing_extensions import is_typeddict


def state_types() -> set[type[BaseModel]]:
    """Every pydantic model that can be stored in a Quorum pattern's state.

    Walked from the checkpoint schema (`quorum.state`): every state it defines, and every
    model those hold, however deep.
    """
    from quorum import state

    found: set[type[BaseModel]] = set()
    for value in vars(state).values():
        if is_typeddict(value) and value.__module__ == state.__name__:
            for hint in get_type_hints(value).values():
                _collect(hint, found)
    return found


def _collect(hint: Any, found: set[type[BaseModel]]) -> None:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        if hint in found:
            return
        found.add(hint)
        for field in hint.model_fields.values():
            _collect(field.annotation, found)
        return
    for arg in get_args(hint):  # list[X], X | None, Annotated[X, ...], dict[str, X]
        _collect(arg, found)


def strict_serializer() -> JsonPlusSerializer:
    """A serializer that refuses to revive any type not in our state or LangGraph's safe set.

    Give it to your own checkpointer when you compile a pattern's `builder` yourself, e.g.
    `AsyncSqliteSaver(conn, serde=quorum.serializer())`: the default serializer warns on
    every Quorum type it revives (and will refuse them in a later LangGraph).
    """
    return JsonPlusSerializer(
        allowed_msgpack_modules=[(t.__module__, t.__name__) for t in state_types()]
    )
