"""One ReAct run through the `quorum` command against the scripted server on loopback.

What `make upgrade` (and a new user) needs to know in seconds: does the installed stack,
ChatOpenAI, openai and its HTTP client included, complete a real run? The scripted
OpenAI-compatible server stands in for the model; the run goes through the real CLI, in its
own process, with its own data folder, and must finish with an answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from quorum.testing.stub import OpenAIStub  # a test double that ships with Quorum

QUESTION = "What is 2+2?"


def main() -> int:
    """Run the smoke test; 0 when the run answered, 1 (with its output) when not."""
    quorum = Path(sys.executable).with_name("quorum")
    with OpenAIStub() as stub, tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "QUORUM_BASE_URL": stub.base_url,
            "QUORUM_API_KEY": "smoke",
            "QUORUM_MODEL": "stub-model",
            "QUORUM_DATA_DIR": data,
            "LANGSMITH_TRACING": "false",
        }
        done = subprocess.run(
            [str(quorum), "run", "react", QUESTION],
            env=env, capture_output=True, text=True, timeout=120, cwd=data,
        )  # fmt: skip
        asked = len(stub.chat_requests())
    if done.returncode != 0 or not done.stdout.strip() or asked == 0:
        sys.stderr.write(done.stdout + done.stderr)
        print(f"smoke: FAILED (exit {done.returncode}, {asked} model requests)", file=sys.stderr)
        return 1
    print(f"smoke: `quorum run react {QUESTION!r}` answered after {asked} model requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
