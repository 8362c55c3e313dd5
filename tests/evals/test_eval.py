"""`quorum eval`: scoring, statistics, budgets and resumption, measured from outside.

The scripted model answers with known right and wrong answers, so every accuracy, interval,
token sum and p-value below is known exactly in advance; the killed eval runs as a real
`quorum eval` process against the scripted OpenAI server, which counts the requests; the
embedded test runs a short eval end to end on SmolLM2.
"""

from __future__ import annotations

import ast
import asyncio
import json
import operator
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage
from typer.testing import CliRunner

from quorum.cli import app
from quorum.context import QuorumContext
from quorum.errors import UsageError
from quorum.evals import Question, arithmetic, load_jsonl, run_eval, word_problems
from quorum.evals.checkers import check
from quorum.evals.report import as_json, draw, rows, write_json
from quorum.evals.statistics import mcnemar_exact, wilson
from quorum.settings import get_settings
from quorum.testing import Script, extracted, last_human, reasoned, scripted, stating
from quorum.testing.stub import Hold, OpenAIStub, isolated_environ, quorum_env, schema_name, text_of
from tests.test_crash import quorum

# --- Checkers and question files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected", "answer", "tolerance", "right"),
    [
        ("exact", "Paris", " paris. ", 0.0, True),
        ("exact", "Paris", "Lyon", 0.0, False),
        ("numeric", "1234", "1,234", 0.0, True),
        ("numeric", "42", "42.0", 0.0, True),
        ("numeric", "3.14159", "3.14", 0.01, True),
        ("numeric", "3.14159", "3.1", 0.01, False),
        ("numeric", "42", "forty-two", 0.0, False),
        ("regex", r"(the )?blue whale", "The Blue Whale", 0.0, True),
        ("regex", r"blue whale", "a blue whale, probably", 0.0, False),
        ("one_of", ["NYC", "New York City"], "new york city", 0.0, True),
        ("one_of", ["NYC", "New York City"], "York", 0.0, False),
    ],
)
def test_each_checker_kind(
    kind: str, expected: str | list[str], answer: str, tolerance: float, right: bool
) -> None:
    assert check(kind, expected, answer, tolerance=tolerance) is right  # type: ignore[arg-type]


def write_lines(path: Path, *lines: object) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


QUESTION_FILE = [
    {"question": "Capital of France?", "answer": "Paris"},
    {"question": "Pi to two places?", "answer": 3.14159, "checker": "numeric", "tolerance": 0.01},
    {"question": "Largest animal?", "answer": "(the )?blue whale", "checker": "regex"},
    {"question": "Biggest US city?", "answer": ["NYC", "New York City"], "checker": "one_of"},
]


async def test_a_question_file_is_scored_with_each_checker(tmp_path: Path) -> None:
    questions = load_jsonl(write_lines(tmp_path / "q.jsonl", *QUESTION_FILE, ""))
    replies = {
        "Capital of France?": "paris",
        "Pi to two places?": "3.14",
        "Largest animal?": "a whale",  # the regex wants the whole answer to match
        "Biggest US city?": "New York City",
    }
    script = Script().on("solver", lambda a, m: f"Known.\nFinal answer: {replies[last_human(m)]}")
    with scripted(script):
        result = await run_eval(questions, ["single"])

    assert [r.correct for r in result.of("single")] == [True, True, False, True]
    assert [q.checker for q in questions] == ["exact", "numeric", "regex", "one_of"]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"question": "x", "answer": ', "not valid JSON"),
        ({"question": "x"}, "answer: Field required"),
        ({"question": "x", "answer": "1", "checker": "fuzzy"}, "checker"),
        ({"question": "x", "answer": "a", "checker": "one_of"}, "one_of takes a list"),
        ({"question": "x", "answer": "ten", "checker": "numeric"}, "is not a number"),
        ({"question": "x", "answer": "(", "checker": "regex"}, "missing ), unterminated"),
    ],
)
def test_a_malformed_line_is_an_error_naming_it(tmp_path: Path, bad: object, problem: str) -> None:
    path = write_lines(tmp_path / "q.jsonl", QUESTION_FILE[0], "", bad, QUESTION_FILE[1])

    with pytest.raises(UsageError) as raised:
        load_jsonl(path)

    assert "q.jsonl line 3: " in str(raised.value) and problem in str(raised.value)


def test_the_command_refuses_a_malformed_file_before_running(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "q.jsonl", QUESTION_FILE[0], {"answer": "1"})

    ran = CliRunner().invoke(app, ["eval", "-q", str(path), "-s", "single"])

    assert ran.exit_code == 2
    assert "line 2: question: Field required" in ran.stderr
    assert not (tmp_path / "data").exists()  # nothing was saved


def _evaluate(expression: str) -> int:
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node: ast.expr) -> int:
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and 0 <= node.value <= 30
        return int(node.value)

    return walk(ast.parse(expression, mode="eval").body)


def test_generated_sets_are_seeded_and_their_answers_are_right() -> None:
    questions = arithmetic(50, seed=3)

    assert questions == arithmetic(50, seed=3) and questions != arithmetic(50, seed=4)
    for q in questions:
        expression = q.question.removeprefix("What is the result of ").removesuffix("?")
        assert expression.count("+") == 2 and expression.count("*") == 2
        assert q.answer == str(_evaluate(expression)) and q.checker == "numeric"
    words = word_problems(8, seed=1)
    assert words == word_problems(8, seed=1) and len({q.question for q in words}) == 8
    # "Mia has 5 apples. She buys 2 bags with 3 apples in each bag, then gives 4 ..." etc.
    assert all(q.answer.lstrip("-").isdigit() for q in words)


# --- Statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I.
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],  # fmt: skip
)
def test_wilson_interval_matches_published_values(
    correct: int, total: int, low: float, high: float
) -> None:
    assert wilson(correct, total) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_reaches_0_and_1_exactly() -> None:
    for total in range(1, 40):
        assert wilson(0, total)[0] == 0.0 and wilson(total, total)[1] == 1.0


def test_exact_mcnemar() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 8) == 2 / 256
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


# --- A scripted eval with known answers ----------------------------------------------------

QUESTIONS = arithmetic(12, seed=7)
EXPECTED = {q.question: q.answer for q in QUESTIONS}
INDEX = {q.question: i for i, q in enumerate(QUESTIONS)}


def _question_in(messages: list[BaseMessage]) -> str:
    text = last_human(messages)
    return text.removeprefix("Question: ").split("\n\n")[0]


def known_answers() -> Script:
    """single is right on questions 0-3, self-consistency on 0-8, debate on all 12."""
    samples: Counter[str] = Counter()

    def solver(agent: str, messages: list[BaseMessage]) -> str:
        question = _question_in(messages)
        right = INDEX[question] < 4
        return f"r\nFinal answer: {EXPECTED[question] if right else '-1'}"

    def sampler(agent: str, messages: list[BaseMessage]) -> str:
        question = _question_in(messages)
        samples[question] += 1
        # Two of three samples right on 0-8 (the majority wins), one of three on the rest.
        right = samples[question] <= (2 if INDEX[question] < 9 else 1)
        return f"r\nFinal answer: {EXPECTED[question] if right else '7'}"

    def judge(agent: str, messages: list[BaseMessage]) -> str | dict:
        # The debate's judge settles on the right number in words of its own.
        question = messages[1].text.removeprefix("Question: ").split("\n\n")[0]
        if not stating(messages):
            return "Debater a checks each step."
        return {"final_answer": f"it is {EXPECTED[question]}", "winner": "a", "confidence": 0.8}

    def extract(agent: str, messages: list[BaseMessage]) -> dict:
        working = last_human(messages)
        if "Final answer:" in working:  # single and self-consistency: taken out as written
            return extracted(working)
        # The judge's answer has no "Final answer:" line: right on every question, as 123.0.
        return {"answer": EXPECTED[_question_in(messages)] + ".0"}

    return (
        Script()
        .on("solver", solver)
        .on("sampler", sampler)
        .on("judge", judge)
        .on("extract", extract)
    )


@pytest.mark.slow
async def test_scripted_eval_gives_exact_accuracies_intervals_tokens_and_significance(
    tmp_path: Path,
) -> None:
    with scripted(known_answers()) as script:
        result = await run_eval(
            QUESTIONS,
            ["single", "self-consistency", "debate"],
            context=QuorumContext(samples=3, max_rounds=1),
            concurrency=4,
        )

    by_name = {row.strategy: row for row in rows(result)}
    single, sc, debate = by_name["single"], by_name["self-consistency"], by_name["debate"]
    assert (single.correct, sc.correct, debate.correct) == (4, 9, 12)
    assert all(row.questions == 12 and row.failures == 0 for row in by_name.values())
    assert (single.accuracy, sc.accuracy, debate.accuracy) == (4 / 12, 9 / 12, 1.0)
    assert (single.low, single.high) == pytest.approx((0.1381, 0.6094), abs=5e-5)
    assert (sc.low, sc.high) == pytest.approx((0.4677, 0.9111), abs=5e-5)
    assert (debate.low, debate.high) == pytest.approx((0.7575, 1.0), abs=5e-5)
    # Every scripted reply is 10 input and 5 output tokens: 2 calls per question for single
    # (the working and the extraction), 3 samples of 2 for self-consistency, and for debate
    # 2 answers and 2 revisions (each read from its working's "Answer:" line), 2 critiques,
    # the judge's weighing and ruling, and the extraction: 9.
    assert (single.input_tokens, single.output_tokens) == (240, 120)
    assert (sc.input_tokens, sc.output_tokens) == (720, 360)
    assert (debate.input_tokens, debate.output_tokens) == (1080, 540)
    assert script.count("solver") == 12 and script.count("sampler") == 36
    assert script.count("judge") == 24 and script.count("extract") == 12 + 36 + 12
    # Self-consistency wins 5 questions, loses none: p = 2 / 2**5, not significant;
    # debate wins 8: p = 2 / 2**8, significant.
    assert sc.vs_single is not None and debate.vs_single is not None
    assert (sc.vs_single.only_strategy, sc.vs_single.only_baseline) == (5, 0)
    assert sc.vs_single.p_value == 2 / 32 and not sc.vs_single.significant
    assert debate.vs_single.p_value == 2 / 256 and debate.vs_single.significant
    assert single.vs_single is None

    saved = as_json(result)
    first = next(r for r in saved["results"] if r["strategy"] == "debate" and r["index"] == 0)
    # Taken out as a number: one spelling, whatever the working wrote.
    assert first["answer"] == EXPECTED[QUESTIONS[0].question] and first["correct"]
    assert first["expected"] == EXPECTED[QUESTIONS[0].question]
    assert (first["input_tokens"], first["output_tokens"], first["calls"]) == (90, 45, 9)
    assert first["thread_id"] == f"{result.eval_id}-debate-0"
    write_json(result, tmp_path / "eval.json")
    draw(result, tmp_path / "eval.png")
    assert json.loads((tmp_path / "eval.json").read_text())["strategies"][2]["correct"] == 12
    assert (tmp_path / "eval.png").read_bytes().startswith(b"\x89PNG")


async def test_every_pattern_runs_as_a_strategy() -> None:
    # Each pattern's last agent states 42 in words of its own; the extraction reads it there.
    script = (
        Script()
        .on("synthesizer", lambda a, m: "Six sevens make 42.")
        .on("format_report", lambda a, m: "# Product\nIt is 42.")
        .on(
            "judge",
            reasoned("Both agree.", {"final_answer": "42", "winner": "tie", "confidence": 0.9}),
        )
        .on("extract", lambda a, m: {"answer": "42"})
    )
    with scripted(script):
        result = await run_eval(
            [Question("What is 6 times 7?", "42", "numeric")],
            ["single", "self-consistency", "orchestrator", "pipeline", "debate", "react"],
            context=QuorumContext(samples=2),
        )

    assert [(r.strategy, r.status, r.correct) for r in result.results] == [
        (s, "answered", True) for s in result.strategies
    ]
    assert script.count("planner") == 2 and script.count("format_report") == 1
    # One extraction per answer: single, each of 2 samples, and each of the 4 patterns.
    assert script.count("agent") == 2 and script.count("extract") == 1 + 2 + 4


async def test_a_budget_stops_the_eval_cleanly_and_a_rerun_goes_on(tmp_path: Path) -> None:
    questions = QUESTIONS[:6]
    with scripted(known_answers()) as script:
        stopped = await run_eval(questions, ["single"], max_tokens=90, concurrency=1)
    assert stopped.stopped == "eval budget max_tokens=90 spent (90 tokens)"
    assert [r.status for r in stopped.results] == ["answered"] * 3 + ["not_run"] * 3
    assert rows(stopped)[0].questions == 3 and rows(stopped)[0].not_run == 3
    assert script.count("solver") == 3

    with scripted(known_answers()) as again:
        finished = await run_eval(questions, ["single"], concurrency=1)
    assert finished.eval_id == stopped.eval_id and finished.stopped is None
    assert again.count("solver") == 3  # only the three not run before
    assert [r.reused for r in finished.results] == [True] * 3 + [False] * 3
    assert rows(finished)[0].correct == 4 and rows(finished)[0].input_tokens == 120


async def test_a_cost_budget_stops_the_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Priced by a table: each scripted call (10 input tokens) costs $10, a question $20.
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"ScriptedChatModel": {"input_per_mtok": 1e6}}))
    monkeypatch.setenv("QUORUM_PRICES", str(prices))
    get_settings.cache_clear()

    with scripted(known_answers()):
        result = await run_eval(QUESTIONS[:6], ["single"], max_cost_usd=25, concurrency=1)

    assert result.stopped == "eval budget max_cost_usd=25 spent ($40.0000)"
    assert [r.cost_usd for r in result.of("single")] == [20.0] * 2 + [0.0] * 4
    assert rows(result)[0].cost_usd == 40.0 and rows(result)[0].not_run == 4


async def test_questions_run_concurrently_up_to_the_limit() -> None:
    with scripted(Script(delay=0.2)) as script:
        await run_eval(arithmetic(6), ["single"], concurrency=2)

    calls = script.calls
    most = max(sum(1 for o in calls if o.start <= c.start < o.end) for c in calls)
    assert len(calls) == 12 and most == 2  # a working and an extraction per question


async def test_a_failed_pattern_continues_from_its_last_step_when_run_again() -> None:
    question = [Question("What is 6 times 7?", "42", "numeric")]
    judged: list[int] = []

    def judge(agent: str, messages: list[BaseMessage]) -> dict | str:
        judged.append(1)
        if len(judged) == 1:
            raise RuntimeError("the judge's endpoint went away")
        if not stating(messages):
            return "Both reach 42."
        return {"final_answer": "42", "winner": "a", "confidence": 0.9}

    script = Script().on("judge", judge).on("extract", lambda a, m: {"answer": "42"})
    with scripted(script):
        failed = await run_eval(question, ["debate"])
        assert failed.results[0].status == "failed"
        assert "the judge's endpoint went away" in (failed.results[0].error or "")
        debaters = script.count("debater_a") + script.count("debater_b")
        again = await run_eval(question, ["debate"])

    assert again.results[0].status == "answered" and again.results[0].correct
    # Only the judge's step ran again: the debaters' turns were kept in the checkpoints.
    assert script.count("debater_a") + script.count("debater_b") == debaters == 6
    assert script.count("judge") == 3  # the failed call, then its weighing and its ruling


async def test_a_failing_question_is_counted_and_named() -> None:
    def broken(agent: str, messages: list[BaseMessage]) -> dict:
        # The extraction's prompt; the repair turns come after it.
        question = messages[1].text.removeprefix("Question: ").split("\n\n")[0]
        if INDEX[question] == 1:
            return {"reasoning": "no answer field"}  # invalid every time: repairs run out
        return {"answer": EXPECTED[question]}

    def solver(agent: str, messages: list[BaseMessage]) -> str:
        return f"Final answer: {EXPECTED[_question_in(messages)]}"

    with scripted(Script().on("solver", solver).on("extract", broken)):
        result = await run_eval(QUESTIONS[:3], ["single"])

    failed = result.of("single")[1]
    assert failed.status == "failed" and not failed.correct and failed.answer is None
    assert "gave no valid NumberAnswer" in (failed.error or "")
    assert rows(result)[0].failures == 1 and rows(result)[0].correct == 2
    assert rows(result)[0].questions == 3


def test_an_evals_threads_are_named_as_such_by_threads_and_show(tmp_path: Path) -> None:
    """They are not pattern runs: `quorum threads` says which evals they belong to, `quorum
    show` what one is and where its answer is, where both said "no threads" and "not made
    by a Quorum pattern"."""
    db = str(tmp_path / "eval.db")
    with scripted(Script()):
        asyncio.run(run_eval(QUESTIONS[:2], ["single"], eval_id="e1", database=db))

    listed = CliRunner().invoke(app, ["threads", "--db", db])
    shown = CliRunner().invoke(app, ["show", "e1-single-0", "--db", db])

    assert listed.exit_code == 0, listed.output
    assert "no pattern threads yet" in listed.output
    assert "eval e1: 2 threads" in listed.output and "--id e1" in listed.output
    assert shown.exit_code != 0
    assert "answered one question of eval 'e1' (strategy 'single')" in shown.output


async def test_a_working_that_reaches_no_answer_is_invalid_not_failed() -> None:
    def solver(agent: str, messages: list[BaseMessage]) -> str:
        question = last_human(messages)
        return "I am not sure." if INDEX[question] == 0 else f"Final answer: {EXPECTED[question]}"

    with scripted(Script().on("solver", solver)):
        result = await run_eval(QUESTIONS[:2], ["single"])

    invalid, answered = result.of("single")
    assert (invalid.status, invalid.answer, invalid.correct) == ("invalid", "", False)
    assert invalid.error == "no well-formed answer"
    assert answered.status == "answered" and answered.correct
    row = rows(result)[0]
    assert (row.invalid, row.failures, row.correct, row.questions) == (1, 0, 1, 2)


async def test_a_number_the_working_never_states_is_invalid_not_wrong() -> None:
    # On the default model a worker answered "classical-mathematics" and the extraction gave
    # 6: a number it made up, not one the strategy reached. A sign is not a number of its own.
    workings = {0: "The answer is classical-mathematics.", 1: "So 5 - 132 = -127."}

    def solver(agent: str, messages: list[BaseMessage]) -> str:
        return workings[INDEX[last_human(messages)]]

    def extract(agent: str, messages: list[BaseMessage]) -> dict:
        return {"answer": 6} if "classical" in last_human(messages) else {"answer": -127}

    with scripted(Script().on("solver", solver).on("extract", extract)):
        result = await run_eval(QUESTIONS[:2], ["single"])

    made_up, stated = result.of("single")
    assert (made_up.status, made_up.answer, made_up.correct) == ("invalid", "", False)
    assert (stated.status, stated.answer) == ("answered", "-127")
    assert rows(result)[0].invalid == 1


# --- A killed eval resumes without re-running finished questions ---------------------------


@pytest.mark.slow
def test_a_killed_eval_resumes_without_rerunning_finished_questions(tmp_path: Path) -> None:
    questions = arithmetic(5, seed=11)
    with OpenAIStub() as stub:
        env, args, first, held = _held_at_the_third_question(stub, tmp_path, 11, 5, "killed")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        held.release()
        before = _per_question(stub, questions)
        assert before == [2, 2, 1, 0, 0]  # a working and an extraction each; the third held

        second = quorum(*args, env=env, cwd=tmp_path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        after = [n - b for n, b in zip(_per_question(stub, questions), before, strict=True)]

    # Questions 1 and 2 were finished: never asked again. 3 was cut off: its working asked
    # again once, then its extraction.
    assert after == [0, 0, 2, 2, 2]
    assert err.count("(finished earlier)") == 2
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["thread_id"] for r in saved["results"]] == [f"killed-single-{i}" for i in range(5)]
    assert [r["status"] for r in saved["results"]] == ["answered"] * 5
    assert "single" in out and "0/5" in out


@pytest.mark.slow
def test_a_stopped_eval_tables_what_it_finished(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C) keeps the answers given so far, and prints and saves their table."""
    with OpenAIStub() as stub:
        _, _, run, held = _held_at_the_third_question(stub, tmp_path, 12, 4, "stopped")
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
        held.release()

    assert run.returncode == 143, err
    assert "stopped early: stopped by Ctrl-C or SIGTERM" in err
    assert "The same command goes on from there" in err
    assert "0/2" in out  # the stub's answers are wrong; two were given
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["status"] for r in saved["results"]] == ["answered"] * 2 + ["not_run"] * 2


def _held_at_the_third_question(
    stub: OpenAIStub, tmp_path: Path, seed: int, n: int, eval_id: str
) -> tuple[dict[str, str], list[str], subprocess.Popen[str], Hold]:
    """`quorum eval` of single on `arithmetic(n, seed)`, started and waited for until the
    stub holds the third question's working: its env, args, process and the hold."""
    env = quorum_env(stub, tmp_path)
    # A working, then its number when the extraction asks for one.
    stub.responder = lambda body: {"answer": 1} if schema_name(body) else "r\nFinal answer: 1"
    third = arithmetic(n, seed=seed)[2].question
    held = stub.hold(lambda body: third in text_of(body["messages"][-1]))
    args = ["eval", "-s", "single", "-n", str(n), "--seed", str(seed),
            "--concurrency", "1", "--id", eval_id, "--out", str(tmp_path / "out")]  # fmt: skip
    run = quorum(*args, env=env, cwd=tmp_path)
    assert held.arrived.wait(60), run.communicate(timeout=5)
    return env, args, run, held


def _per_question(stub: OpenAIStub, questions: list[Question]) -> list[int]:
    asked = [text_of(body["messages"][-1]) for body in stub.chat_bodies()]
    return [sum(q.question in text for text in asked) for q in questions]


# --- The embedded model --------------------------------------------------------------------


@pytest.mark.embedded
def test_a_short_eval_on_the_embedded_model(tmp_path: Path) -> None:
    env = isolated_environ()
    env |= {
        "QUORUM_DATA_DIR": str(tmp_path / "data"),
        "QUORUM_EMBEDDED_MODEL": "smollm2-135m",  # the small one: a few questions in minutes
        "LANGSMITH_TRACING": "false",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "eval", "-s", "single,self-consistency",
         "-n", "3", "--set", "samples=2", "--out", str(tmp_path / "out")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    assert "single" in ran.stdout and "self-consistency" in ran.stdout and "95% CI" in ran.stdout
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["questions"] == 3 and saved["model"] == "smollm2-135m-instruct (embedded)"
    assert [row["questions"] for row in saved["strategies"]] == [3, 3]
    assert all(r["status"] in ("answered", "invalid", "failed") for r in saved["results"])
    assert all(r["input_tokens"] > 0 for r in saved["results"] if r["status"] == "answered")
    assert (tmp_path / "out" / "eval.png").read_bytes().startswith(b"\x89PNG")


async def test_self_consistency_samples_each_send_a_seed_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quorum.models import sample_seed

    with OpenAIStub() as stub:
        monkeypatch.setenv("QUORUM_BASE_URL", stub.base_url)
        monkeypatch.setenv("QUORUM_MODEL", "stub-model")
        get_settings.cache_clear()
        stub.responder = lambda body: {"answer": 4} if schema_name(body) else "Final answer: 4"
        await run_eval(
            [Question("What is 2+2?", "4", "numeric")],
            ["self-consistency"],
            context=QuorumContext(samples=4),
        )
        workings = [body for body in stub.chat_bodies() if not schema_name(body)]
        seeds = sorted(body["seed"] for body in workings)

    # Counted at the server: four requests, four seeds, each derived from the run's seed
    # (7 by default) and the sample's index, so a rerun samples the same four again.
    assert seeds == sorted(sample_seed(7, index) for index in range(4))
