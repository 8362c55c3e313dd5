"""Quorum's dependency lock: write it, check it, bootstrap from it, upgrade it.

`requirements.lock` pins every distribution Quorum, its embedded model and its dev tools
need, each with its hashes, for Python 3.11 and newer on Linux and macOS (one universal
resolution by uv, markers where a platform differs). It records no download addresses:
installs come from whatever index pip and uv are set up to use, checked by hash.

    python scripts/lock.py check       # the lock still matches pyproject.toml, or exit 1
    python scripts/lock.py uv          # print the lock's own pin of uv (to bootstrap it)
    python scripts/lock.py write       # re-lock after a pyproject.toml change (keeps pins)
    python scripts/lock.py upgrade     # newest releases; kept only if the fast lane passes

The lock's header carries a fingerprint of what it was resolved from (requires-python and
the dependency tables of pyproject.toml), so `check` needs no network and no resolver.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
EXTRAS = ("dev", "embedded")
FINGERPRINT = "# inputs-sha256: "
HEADER = """\
# Quorum's lock: every distribution, pinned with its hashes, for Python >= 3.11 on Linux
# (x86_64, aarch64) and macOS. `make setup` installs exactly this, with no resolution.
# Written by `make lock` (after a pyproject.toml change) or `make upgrade` (newest releases,
# kept only when the fast test lane and a stub run pass). Do not edit by hand.
"""


def fingerprint() -> str:
    """A digest of everything in pyproject.toml that the resolution depends on."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "extras": EXTRAS,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_fingerprint(lock: Path = LOCK) -> str | None:
    """The fingerprint written in `lock`'s header, or None when it has none."""
    if not lock.exists():
        return None
    for line in lock.read_text().splitlines():
        if line.startswith(FINGERPRINT):
            return line.removeprefix(FINGERPRINT).strip()
    return None


def check() -> int:
    """Exit status 0 when the lock matches pyproject.toml; 1, saying what to do, when not."""
    if not LOCK.exists():
        print(f"error: {LOCK.name} is missing. Run `make lock` to write it.", file=sys.stderr)
        return 1
    if recorded_fingerprint() != fingerprint():
        print(
            f"error: {LOCK.name} is stale: the dependencies in pyproject.toml changed after it "
            "was written, so it no longer pins what pyproject.toml asks for.\n"
            "  Run `make lock` to re-lock for that change (other pins stay as they are), or\n"
            "  `make upgrade` to move everything to the newest releases that pass the tests;\n"
            f"  then commit {LOCK.name} with pyproject.toml.",
            file=sys.stderr,
        )
        return 1
    return 0


def uv_requirement(lock: Path = LOCK) -> str:
    """The lock's entry for uv itself (version and hashes), as a requirements file."""
    match = re.search(r"^uv==\S+(?: \\\n\s+--hash=\S+)+", lock.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"error: {lock.name} pins no uv; run `make lock`.")
    return match.group(0) + "\n"


def write(*, upgrade: bool, lock: Path = LOCK) -> None:
    """Resolve pyproject.toml into `lock`: the newest releases, or the current pins kept."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "requirements.lock"
        if lock.exists() and not upgrade:
            shutil.copy(lock, out)  # uv keeps the pins it finds in its output file
        command = [
            uv(), "pip", "compile", str(PYPROJECT), "--universal", "--python-version", "3.11",
            "--generate-hashes", "--no-emit-index-url", "--no-header", "--quiet",
            *(f"--extra={extra}" for extra in EXTRAS), "-o", str(out),
        ]  # fmt: skip
        if upgrade:
            command.append("--upgrade")
        subprocess.run(command, check=True, cwd=ROOT)
        body = out.read_text()
    lock.write_text(HEADER + FINGERPRINT + fingerprint() + "\n" + body)


def uv() -> str:
    """The uv to resolve with: the one installed next to this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise SystemExit("error: uv is not installed; run `make setup` first.")
    return found


def upgrade() -> int:
    """Move the lock to the newest releases; keep it only if the fast lane and a run pass."""
    kept = LOCK.read_bytes()
    write(upgrade=True)
    if LOCK.read_bytes() == kept:
        print("requirements.lock: already at the newest releases.")
        return 0
    make = os.environ.get("MAKE", "make")
    passed = subprocess.run([make, "setup", "test-fast", "smoke"], cwd=ROOT).returncode == 0
    if passed:
        print(
            "requirements.lock upgraded: the fast lane and the stub run passed. Review and "
            "commit it (git diff requirements.lock lists every version that moved)."
        )
        return 0
    LOCK.write_bytes(kept)
    subprocess.run([make, "setup"], cwd=ROOT, check=True)
    print(
        "error: the upgraded lock failed the fast lane or the stub run; the old lock is "
        "restored and installed. The failing output is above.",
        file=sys.stderr,
    )
    return 1


def main() -> int:
    """Run the sub-command named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check", "uv", "write", "upgrade"])
    command = parser.parse_args().command
    if command == "check":
        return check()
    if command == "uv":
        sys.stdout.write(uv_requirement())
        return 0
    if command == "write":
        write(upgrade=False)
        return 0
    return upgrade()


if __name__ == "__main__":
    sys.exit(main())
