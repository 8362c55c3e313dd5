"""What `langgraph dev` and other importers get from the graph modules."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from quorum.checkpoints.serde import state_types
from quorum.context import QuorumContext, context_json_schema
from quorum.graphs import PATTERNS
from quorum.testing import Script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(PATTERNS))
def test_exported_graph_is_named_and_has_no_checkpointer(name: str) -> None:
    module = importlib.import_module(f"quorum.graphs.{name}")

    assert module.graph.checkpointer is None
    assert module.graph.name == name
    assert module.builder is PATTERNS[name]
    schema = module.graph.get_context_jsonschema()
    assert schema["properties"]["max_steps"]["default"] == 8
    assert schema["properties"]["models"]["type"] == "object"


def test_context_schema_renders_every_field_with_a_description() -> None:
    schema = context_json_schema()

    assert set(schema["properties"]) == set(QuorumContext.__dataclass_fields__)
    assert all(p.get("description") for p in schema["properties"].values())
    json.dumps(schema)


def test_langgraph_json_lists_the_four_graphs_and_our_checkpointer() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())

    assert config["graphs"] == {name: f"./quorum/graphs/{name}.py:graph" for name in PATTERNS}
    module, _, attribute = config["checkpointer"]["path"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_strict_serializer_allows_exactly_our_state_models() -> None:
    names = {t.__name__ for t in state_types() if t.__module__.startswith("quorum.")}

    assert names == {
        "Plan",
        "PlanStep",
        "ResearchNotes",
        "Finding",
        "Summary",
        "FactCheck",
        "Position",
        "Verdict",
    }


async def test_imported_graph_runs_as_is(script: Script) -> None:
    from quorum.graphs.debate import graph

    values = await graph.ainvoke({"input": "Tabs or spaces?"}, context=QuorumContext())

    assert values["output"] == values["verdict"].final_answer
    assert values["usage"]["judge"]["calls"] == 2  # it weighs in text, then rules
