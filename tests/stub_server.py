"""A scripted HTTP server for the answers the synthetic server never gives (several models,
no /models route, a refusal that echoes the key): a real socket, in a thread of the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (method, path, request headers) -> (status, JSON body, or bytes sent as they are)
Script = Callable[[str, str, dict[str, str]], tuple[int, Any]]


@contextmanager
def stub_server(script: Script) -> Iterator[str]:
    """Serve ``script`` on 127.0.0.1; yield the base URL (ending in /v1)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer("POST")

        def _answer(self, method: str) -> None:
            status, body = script(method, self.path, dict(self.headers))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def listing(*models: str) -> Script:
    """A server whose /models lists ``models`` and which answers nothing else."""

    def script(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
        return 404, {"error": {"message": f"no route {path}"}}

    return script
