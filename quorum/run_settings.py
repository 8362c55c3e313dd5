"""The settings each run of a thread ran with, stored once per run.

A run's settings (its `QuorumContext`) decide how a resume goes on, so they are durable. They
used to ride in every checkpoint's metadata (about 600 of its 770 bytes, on every step);
now the run's first step stores them once in the thread's store, under the run's id, and
each checkpoint carries only that id (`run_id`, which LangGraph keeps in checkpoint metadata
anyway). Threads written before, and runs of a graph compiled without a store, keep them in
the metadata under `quorum_context`; `settings_of` reads both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.store.base import BaseStore

from quorum.journal import thread_namespace

NAMESPACE = "quorum_runs"
METADATA_KEY = "quorum_context"
"""Where the run settings are kept in checkpoint metadata until the run's record holds them."""


async def keep_once(store: BaseStore | None, config: RunnableConfig) -> RunnableConfig:
    """Store the settings in `config`'s metadata as its run's record; the config without them.

    Given a config with no thread, settings or store, returns it as it is: the settings then
    stay in every checkpoint's metadata, where `settings_of` finds them too. A run with no id
    gets one, so its checkpoints name the record.
    """
    metadata = dict(config.get("metadata") or {})
    settings = metadata.get(METADATA_KEY)
    thread_id = (config.get("configurable") or {}).get("thread_id")
    if not isinstance(store, BaseStore) or not isinstance(settings, str) or not thread_id:
        return config
    run_id = str(metadata.get("run_id") or config.get("run_id") or uuid.uuid4())
    # Stored before the run's first checkpoint: no checkpoint names a run without its record.
    value = {"context": json.loads(settings)}
    await store.aput(thread_namespace(NAMESPACE, str(thread_id)), run_id, value, index=False)
    del metadata[METADATA_KEY]
    return {**config, "metadata": {**metadata, "run_id": run_id}}


async def settings_of(
    store: BaseStore | None, thread_id: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings the run that wrote a checkpoint (with this `metadata`) ran with.

    Empty when there is no record of them: a thread written by plain LangGraph, say; its
    resume then runs with the defaults.
    """
    kept = metadata.get(METADATA_KEY)
    if isinstance(kept, str):
        return dict(json.loads(kept))
    run_id = metadata.get("run_id")
    if store is None or not run_id:
        return {}
    item = await store.aget(thread_namespace(NAMESPACE, thread_id), str(run_id))
    return dict(item.value.get("context", {})) if item is not None else {}
