"""A run's progress on stderr as it works, and its answer on stdout as it is written."""

from __future__ import annotations

import time
from typing import IO, Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from quorum import LedgerRow, RunEvent, SaidOnce, models
from quorum import threads as threads_api
from quorum.cli.shell import _run_async, err, out
from quorum.context import QuorumContext
from quorum.state import Usage, add_usage, sum_usage, total_usage


class _Progress:
    """Shows a run's progress on stderr as it works.

    In a terminal, a live display of the agents running now (and for how long), the steps
    done, tokens, cost and the share of each budget used, with a line for each finished
    agent above it; piped, the same as plain lines, one per agent started and finished.
    """

    def __init__(
        self,
        context: QuorumContext | None = None,
        before: LedgerRow | None = None,
        *,
        stream: bool = False,
        verbose: bool = False,
    ) -> None:
        self.context = context
        self.before = before or LedgerRow()
        """What earlier runs of the thread spent: budgets count the whole thread."""
        self.usage: dict[str, Usage] = {}
        self.done = 0
        self.running: list[tuple[str, float]] = []
        self.live: Live | None = None
        # The embedded model answers one request at a time: parallel agents queue for it.
        self.one_at_a_time = models.current_endpoint().embedded
        self.stream = stream
        """Write the answer to stdout as its writer writes it."""
        self.verbose = verbose
        """Write every agent's replies to stderr as they are written."""
        self.answer = _Written(out.file, flush_each=out.is_terminal)
        """The answer as streamed: the reply its writer wrote last."""
        self.said_once = SaidOnce()
        self.talk = _Written(err.file, flush_each=True)
        self.talker = ""

    def __enter__(self) -> _Progress:
        # NO_COLOR asks for no escapes at all: the live display moves the cursor with them.
        if err.is_terminal and not err.is_dumb_terminal and not err.no_color:
            self.live = Live(
                console=err, get_renderable=self._display, refresh_per_second=8, transient=True
            )
            self.live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    @property
    def wants_text(self) -> bool:
        """Whether the run should be streamed for this display."""
        return self.stream or self.verbose

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "wrote":
            self._wrote(event)
            return
        self._end_lines()
        if event.kind == "started":
            self.running.append((event.agent, time.monotonic()))
            if self.live is None:
                err.print(f"  [cyan]▶[/cyan] {escape(event.agent)}{self._queued()}")
            else:
                self.live.refresh()
            return
        # Parallel workers finish in any order: drop the first one of that name.
        started = next((r for r in self.running if r[0] == event.agent), None)
        if started is not None:
            self.running.remove(started)
        if not event.error:
            self.done += 1
            self.usage = add_usage(self.usage, event.usage)
        if self.live is not None:
            self.live.refresh()  # the lines below print above the display as it is now
        if event.error:
            err.print(f"  [red]✗[/red] {escape(event.agent)}: {escape(event.error)}")
            return
        err.print(f"  [green]✓[/green] {escape(event.agent)}  [dim]{escape(self._totals())}[/dim]")

    def _wrote(self, event: RunEvent) -> None:
        if self.stream and event.answer:
            self._quiet()
            if self.talk.open:
                self.talk.end_line()
            if event.call != self.answer.call:
                self.answer.write(self.answer.call, self.said_once.close())
                self.said_once = SaidOnce()  # each reply is an answer of its own
            # What is shown is the answer the thread keeps: a repeated paragraph is dropped.
            self.answer.write(event.call, self.said_once.feed(event.text))
        elif self.verbose:
            self._quiet()
            if self.answer.open:
                self.answer.end_line()
            if event.call != self.talker:
                self.talk.end_line()
                replayed = " [dim](replayed from the journal)[/dim]" if event.replayed else ""
                err.print(f"  [magenta]✎[/magenta] {escape(event.agent)}{replayed}")
                self.talker = self.talk.call = event.call
                self.talk.text = ""
            self.talk.write(event.call, event.text)

    def _quiet(self) -> None:
        """Stop the live display for good: written text and a redrawn display do not mix."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _end_lines(self) -> None:
        """End a line of streamed text, so a progress line does not continue it."""
        self.answer.end_line()
        self.talk.end_line()
        self.talker = ""

    def _totals(self) -> str:
        # What earlier runs of the thread spent, and this one so far.
        spent = sum_usage(self.before.usage(), total_usage(self.usage))
        calls, cost = spent["calls"], spent.get("cost_usd", 0.0)
        tokens = spent["input_tokens"] + spent["output_tokens"]
        parts = [f"steps done {self.done}", f"tokens so far {tokens:,}", f"cost ${cost:.4f}"]
        context = self.context
        if context is not None:
            for name, used, limit in (
                ("tokens", tokens, context.max_tokens),
                ("cost", cost, context.max_cost_usd),
                ("calls", calls, context.max_model_calls),
            ):
                if limit:
                    parts.append(f"{name} budget {used / limit:.0%} used")
        return " · ".join(parts)

    def _queued(self) -> str:
        if not self.one_at_a_time or len(self.running) < 2:
            return ""
        return (
            f"  [dim]queued: {len(self.running)} agents share the embedded model, "
            "which answers one request at a time[/dim]"
        )

    def _display(self) -> RenderableType:
        now = time.monotonic()
        running = Table.grid(padding=(0, 2))
        for agent, since in list(self.running):
            running.add_row(Spinner("dots", style="cyan"), escape(agent), f"{now - since:.1f} s")
        return Group(
            running
            if self.running
            else Text("starting" if not self.done else "between steps", style="dim"),
            Text.from_markup(self._queued().strip()),
            Text(self._totals(), style="bold"),
        )


class _Written:
    """Text streamed to one file, a reply at a time, ended with a newline when it stops."""

    def __init__(self, file: IO[str], *, flush_each: bool) -> None:
        self.file = file
        self.flush_each = flush_each
        """Flush every part (a terminal); otherwise at each line's end (piped)."""
        self.call = ""
        self.text = ""
        """The last reply written, as far as it came."""
        self.open = False
        """The last line written has no newline yet."""

    def write(self, call: str, text: str) -> None:
        if not text:
            return
        if call != self.call:
            if self.text:
                self.end_line()
                self.file.write("\n")  # a blank line between two replies
            self.call, self.text = call, ""
        self.text += text
        self.file.write(text)
        self.open = not text.endswith("\n")
        if self.flush_each or "\n" in text:
            self.file.flush()

    def end_line(self) -> None:
        if self.open:
            self.file.write("\n")
            self.file.flush()
            self.open = False


def _resume_progress(
    thread: str,
    db: str | None,
    settings: dict[str, Any] | None,
    *,
    stream: bool = False,
    verbose: bool = False,
) -> _Progress:
    """Progress of a resume: its budgets, and what the thread spent before it."""

    async def so_far() -> tuple[QuorumContext, LedgerRow]:
        context = await threads_api.run_context(thread, database=db, settings=settings)
        return context, (await threads_api.ledger(thread, database=db)).total

    context, before = _run_async(so_far(), thread=thread)
    return _Progress(context, before, stream=stream, verbose=verbose)
