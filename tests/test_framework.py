"""Every private framework part Quorum uses (`quorum.framework`) is still there, as used.

The upgrade that removes or renames one fails here, naming it, not somewhere deep in a run.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from langchain_core.tracers.langchain import LangChainTracer
from langgraph.channels import DeltaChannel
from langgraph.graph import START, StateGraph
from langgraph.types import Send

from quorum import framework
from quorum.graphs.pattern import PatternGraph
from quorum.graphs.react import builder

ROOT = Path(__file__).resolve().parents[1]


def test_the_message_delta_reducer_merges_messages() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage

    merged = framework.messages_delta_reducer(
        [HumanMessage("a", id="1"), AIMessage("b", id="2")],
        [[AIMessage("c", id="3")], [RemoveMessage(id="1")]],
    )
    assert [m.content for m in merged] == ["b", "c"]
    assert DeltaChannel(framework.messages_delta_reducer) is not None


def test_a_pending_send_is_kept_in_the_pregel_tasks_channel() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    graph = StateGraph(dict)
    graph.add_node("fan", lambda state: {})
    graph.add_node("work", lambda task: {})
    graph.add_conditional_edges(START, lambda state: [Send("work", {"step_id": "s1"})])
    compiled = graph.compile(checkpointer=InMemorySaver(), interrupt_before=["work"])
    config = {"configurable": {"thread_id": "t"}}
    compiled.invoke({}, config)

    saved = compiled.checkpointer.get_tuple(config)
    snapshot = compiled.get_state(config)
    assert saved is not None and framework.PREGEL_TASKS in saved.checkpoint["channel_values"]
    [task] = snapshot.tasks
    assert task.path[0] == framework.PREGEL_PUSH and isinstance(task.path[1], int)


def test_a_compiled_graph_can_become_a_pattern_graph() -> None:
    graph = builder.compile()
    assert (
        isinstance(graph, PatternGraph) and type(graph).__mro__[1].__name__ == "CompiledStateGraph"
    )


def test_the_tracer_still_has_the_methods_quorum_overrides() -> None:
    for hook in framework.TRACER_HOOKS:
        method = getattr(LangChainTracer, hook, None)
        assert callable(method), f"LangChainTracer.{hook} is gone: see quorum.framework"
    assert "run" in inspect.signature(LangChainTracer._persist_run_single).parameters


def test_llama_cpp_still_has_what_the_embedded_usage_counts_wrap() -> None:
    import llama_cpp

    for name in ("generate", "create_chat_completion"):
        assert callable(getattr(llama_cpp.Llama, name)), f"Llama.{name} is gone"
    assert "tokens" in inspect.signature(llama_cpp.Llama.generate).parameters
    assert callable(llama_cpp.llama_vocab_is_eog)


def test_chat_openai_still_builds_its_payload_in_the_hook_quorum_overrides() -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    hook = getattr(ChatOpenAI, framework.CHAT_PAYLOAD_HOOK, None)
    assert callable(hook), f"ChatOpenAI.{framework.CHAT_PAYLOAD_HOOK} is gone: see quorum.framework"
    model = ChatOpenAI(model="m", api_key="k", base_url="http://127.0.0.1:9/v1")  # type: ignore[arg-type]
    payload = hook(model, [HumanMessage("hi")])
    assert payload["messages"] == [{"role": "user", "content": "hi"}]


def test_no_other_module_imports_a_private_framework_name() -> None:
    """Outside quorum/framework.py, nothing imports an underscored name of a framework."""
    offenders = []
    for path in (ROOT / "quorum").rglob("*.py"):
        if path.name == "framework.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "langgraph",
                "langchain_core",
                "langsmith",
                "langchain_openai",
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private += [node.module] if "._" in (node.module or "") else []
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: {private}")
    assert not offenders, offenders
    assert {use.where for use in framework.PRIVATE_USES} >= {"quorum.state", "quorum.dry_run"}
