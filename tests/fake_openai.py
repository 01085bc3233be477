"""A scriptable fake OpenAI-compatible server on 127.0.0.1 (a free port), for adapter tests.

``FakeServer(handler)``: ``handler(path, body) -> Reply`` decides each answer; every request is
recorded (path and JSON body) in ``server.requests``. A ``Reply`` is a status, a JSON-able body or
raw bytes, and an optional delay (to provoke client timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    delay_s: float = 0.0
    raw: bytes | None = None


Handler = Callable[[str, dict[str, Any]], Reply]


class FakeServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.removeprefix("/v1/")
                with outer.lock:
                    outer.requests.append((path, body))
                reply = outer.handler(path, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.requests]

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion_logprobs(top: dict[str, float]) -> dict[str, Any]:
    """A /completions body whose first token has these top logprobs (vLLM's shape)."""
    first = max(top, key=lambda token: top[token])
    return {
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": first,
                "logprobs": {"tokens": [first], "top_logprobs": [top]},
                "finish_reason": "length",
            }
        ],
    }


def chat_logprobs(top: dict[str, float]) -> dict[str, Any]:
    """A /chat/completions body whose first token has these top logprobs (OpenAI's shape)."""
    first = max(top, key=lambda token: top[token])
    items = [{"token": token, "logprob": value} for token, value in top.items()]
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": first},
                "logprobs": {
                    "content": [{"token": first, "logprob": top[first], "top_logprobs": items}]
                },
                "finish_reason": "length",
            }
        ],
    }


def chat_choices(texts: list[str]) -> dict[str, Any]:
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
    }


def completion_choices(texts: list[str]) -> dict[str, Any]:
    return {
        "choices": [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
    }
