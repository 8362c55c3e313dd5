"""Trace receivers on loopback for tracing tests: an OTLP/HTTP collector and a LangSmith API.

`OtlpReceiver`: point `OTEL_EXPORTER_OTLP_ENDPOINT` at it; it decodes every export request
with opentelemetry-proto (`ExportTraceServiceRequest`) and keeps the raw bodies.

`LangSmithCapture`: point `LANGSMITH_ENDPOINT` at it. It answers `/info` the way a LangSmith
server does (multipart ingestion and, unless told otherwise, zstd compression on, so the
client sends what it sends a real server) and takes runs in every form the langsmith client
uses: multipart (`/runs/multipart`, zstd-compressed or not), batched JSON (`/runs/batch`),
and single `POST /runs` / `PATCH /runs/{id}`. Posts and patches of one run are merged into
`runs[id]`; `bodies` keeps every request body as received, decompressed, for grepping.

    with LangSmithCapture() as capture:
        env["LANGSMITH_ENDPOINT"] = capture.url
        ...
        root = capture.roots()[0]; capture.children(root["id"])
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Json = dict[str, Any]


class _Receiver:
    """A threaded HTTP server on 127.0.0.1, served in the background while in a `with`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.bodies: list[bytes] = []
        """Every request body, decompressed."""
        self.paths: list[str] = []
        self.encodings: set[str] = set()
        """The Content-Encoding of every request ('' when none)."""
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def keep(self, path: str, encoding: str, body: bytes) -> bytes:
        """Record one request's body, decompressed, and return it."""
        if encoding == "zstd":
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        with self._lock:
            self.encodings.add(encoding)
            self.bodies.append(body)
            self.paths.append(path)
        return body


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""

    def _body(self, receiver: _Receiver) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return receiver.keep(self.path, self.headers.get("Content-Encoding", ""), body)

    def _reply(self, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OtlpReceiver(_Receiver):
    """An OTLP/HTTP traces endpoint that decodes every export it receives."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self._body(receiver))
                receiver.requests.append(request)
                self._reply(b"", "application/x-protobuf")

        super().__init__(Handler)

    def spans(self) -> list[Any]:
        """Every span received, in the order received."""
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def services(self) -> set[str]:
        """The service.name of every resource that sent spans."""
        return {
            attribute.value.string_value
            for request in self.requests
            for resource in request.resource_spans
            for attribute in resource.resource.attributes
            if attribute.key == "service.name"
        }


class LangSmithCapture(_Receiver):
    """The LangSmith stand-in: every run it is sent, posts and patches merged by id."""

    def __init__(self, *, compression: bool = True) -> None:
        self.compression = compression
        self.runs: dict[str, Json] = {}
        super().__init__(_langsmith_handler(self))

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


def _langsmith_handler(capture: LangSmithCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(_Quiet):
        def do_GET(self) -> None:
            info = capture.info() if self.path.rstrip("/").endswith("/info") else {}
            self._reply(json.dumps(info).encode())

        def do_POST(self) -> None:
            body = self._body(capture)
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/runs/multipart"):
                capture.take_multipart(self.headers.get("Content-Type", ""), body)
            elif path.endswith("/runs/batch"):
                capture.take_batch(json.loads(body))
            elif path.endswith("/runs"):
                run = json.loads(body)
                capture.merge(str(run["id"]), run)
            self._reply(b"{}")

        def do_PATCH(self) -> None:
            body = self._body(capture)
            run_id = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            capture.merge(run_id, json.loads(body))
            self._reply(b"{}")

    return Handler
