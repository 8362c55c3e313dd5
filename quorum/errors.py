"""The errors Quorum raises on purpose: each says what went wrong and what to do about it.

The CLI prints a `QuorumError` as one line and exits non-zero; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError


class QuorumError(Exception):
    """An error a user can act on; `hint` says how."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(QuorumError, ValueError):
    """The command or call was given bad input.

    A `ValueError` too: servers such as `langgraph dev` show a ValueError's message to the
    caller (Studio, langgraph-sdk) and hide other errors' as internal.
    """

    exit_code = 2


class ConfigError(QuorumError):
    """A setting is missing or wrong."""


class ModelError(QuorumError):
    """The model endpoint failed in a way retrying will not fix."""


class InvalidReply(ModelError):
    """The model's replies stayed invalid through the bounded repair.

    The replies that made the step fail are not replayed: a resume asks the model again.
    """


class PlanError(QuorumError):
    """The planner could not produce a valid plan within its repairs.

    As with `InvalidReply`, a resume asks the planner again instead of replaying its plans.
    """


class ThreadNotFound(QuorumError):
    """No thread with that id is in the checkpoint store."""


class NoDatabase(ThreadNotFound):
    """The checkpoint database does not exist yet: no run has used it."""


class ThreadBusy(QuorumError):
    """Another run holds the thread; try again when it has finished."""

    exit_code = 3


class LeaseLost(ThreadBusy):
    """A run stalled past its lease, and another run took its thread over.

    The stalled run's writes into the thread's journal and effect ledger are refused, and it
    stops.
    """


class BudgetExceeded(QuorumError):
    """A run's token, cost, call or time budget ran out; resume with a larger one."""

    exit_code = 4

    def __init__(self, message: str, *, budget: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.budget = budget


class RunFailed(QuorumError):
    """A run stopped because an agent failed; its checkpoints are kept for `resume`."""

    def __init__(self, message: str, *, agent: str, thread_id: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.agent = agent
        self.thread_id = thread_id


def problems(error: ValidationError) -> str:
    """Each problem pydantic found, as `where: what`, on one line."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors()
    )


def check_utf8(text: str, what: str) -> None:
    """Refuse `text` unless it is valid UTF-8 text; `what` names it in the error.

    Bytes a terminal could not decode arrive in Python as lone surrogates: they cannot be
    stored, sent or printed, so they are refused where they come in, before anything is saved.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(
            f"{what} is not valid UTF-8 text (undecodable bytes at character {error.start})",
            hint="pass UTF-8 text; convert other encodings first, e.g. with iconv",
        ) from None
