"""A LangSmith API stand-in on loopback that keeps every run it is sent, for tracing tests.

Point `LANGSMITH_ENDPOINT` at it. It answers `/info` the way a LangSmith server does (with
multipart ingestion and, unless told otherwise, zstd compression on, so the client sends
what it sends a real server), and takes runs in every form the langsmith client uses:
multipart (`/runs/multipart`, zstd-compressed or not), batched JSON (`/runs/batch`), and
single `POST /runs` / `PATCH /runs/{id}`. Posts and patches of one run are merged into
`runs[id]`; `bodies` keeps every request body as received, decompressed, for grepping.

    with LangSmithCapture() as capture:
        env["LANGSMITH_ENDPOINT"] = capture.url
        ...
        root = capture.roots()[0]; capture.children(root["id"])
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zstandard

Json = dict[str, Any]


class LangSmithCapture:
    """The stand-in server; a context manager serving on 127.0.0.1 in a background thread."""

    def __init__(self, *, compression: bool = True) -> None:
        self.compression = compression
        self.runs: dict[str, Json] = {}
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.encodings: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LangSmithCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def info(self) -> Json:
        return {
            "version": "0.10.0",
            "license_expiration_time": None,
            "batch_ingest_config": {
                "use_multipart_endpoint": True,
                "scale_up_qsize_trigger": 1000,
                "scale_up_nthreads_limit": 16,
                "scale_down_nempty_trigger": 4,
                "size_limit": 100,
                "size_limit_bytes": 20_971_520,
            },
            "instance_flags": {"zstd_compression_enabled": self.compression},
        }

    def merge(self, run_id: str, fields: Json) -> None:
        with self._lock:
            self.runs.setdefault(run_id, {"id": run_id}).update(fields)

    def roots(self) -> list[Json]:
        return [run for run in self.runs.values() if not run.get("parent_run_id")]

    def children(self, run_id: str) -> list[Json]:
        return [run for run in self.runs.values() if run.get("parent_run_id") == run_id]

    def metadata(self, run: Json) -> Json:
        return dict((run.get("extra") or {}).get("metadata") or {})

    def take_multipart(self, content_type: str, body: bytes) -> None:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition") or ""
            payload = part.get_payload(decode=True) or b""
            kind, _, rest = str(name).partition(".")
            run_id, _, field = rest.partition(".")
            if kind not in ("post", "patch") or not run_id:
                continue  # attachments, feedback
            value = json.loads(payload)
            self.merge(run_id, {field: value} if field else value)

    def take_batch(self, body: Json) -> None:
        for run in [*body.get("post", []), *body.get("patch", [])]:
            self.merge(str(run["id"]), run)


def _handler_for(capture: LangSmithCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _reply(self, payload: Any, status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding", "")
            capture.encodings.add(encoding)
            if encoding == "zstd":
                body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            with capture._lock:
                capture.bodies.append(body)
                capture.paths.append(self.path)
            return body

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/info"):
                self._reply(capture.info())
            else:
                self._reply({})

        def do_POST(self) -> None:
            body = self._body()
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/runs/multipart"):
                capture.take_multipart(self.headers.get("Content-Type", ""), body)
            elif path.endswith("/runs/batch"):
                capture.take_batch(json.loads(body))
            elif path.endswith("/runs"):
                run = json.loads(body)
                capture.merge(str(run["id"]), run)
            self._reply({})

        def do_PATCH(self) -> None:
            body = self._body()
            run_id = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            capture.merge(run_id, json.loads(body))
            self._reply({})

    return Handler
