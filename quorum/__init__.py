"""Quorum: durable, observable multi-agent patterns on LangGraph.

The four patterns (orchestrator, pipeline, debate, react) are compiled StateGraphs in
`quorum.graphs`; this package's top level is the Python API that runs them on durable
threads:

    import quorum
    result = await quorum.run("orchestrator", "Compare SQLite and PostgreSQL for a CLI tool")
    print(result.output, result.thread_id)

To compile a pattern's `builder` with your own checkpointer, give it Quorum's serializer
(`serializer()`): it revives Quorum's state types, and nothing else, without warnings.
"""

from quorum.checkpoints.serde import strict_serializer as serializer
from quorum.context import QuorumContext
from quorum.errors import QuorumError, RunFailed, ThreadBusy
from quorum.runner import ThreadInfo, delete_thread, get_thread, list_threads, resume, run

__all__ = [
    "QuorumContext",
    "QuorumError",
    "RunFailed",
    "ThreadBusy",
    "ThreadInfo",
    "delete_thread",
    "get_thread",
    "list_threads",
    "resume",
    "run",
    "serializer",
]
