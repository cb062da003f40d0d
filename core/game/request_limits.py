"""An ASGI middleware that bounds request bodies and refuses uploads, before any parsing.

The app's API takes a few short values (a prompt of at most 1000 characters, numbers, a
mode), so a request body has no reason to be large, and the app takes no files. Gradio
would otherwise parse a 100 MB JSON body in full (hundreds of MiB of memory that stays)
and store small uploads. This wrapper answers, before the application sees the request:

* 403 to any multipart upload and to the upload routes (``…/upload``,
  ``…/process_recording``), at every size, 0 bytes included;
* 413 to a body whose declared ``Content-Length`` is over the limit (nothing is read);
* 413 as soon as the bytes actually received pass the limit (a chunked body has no
  declared length): the application is told the client went away and anything it tries to
  send afterwards is dropped.

Pure ASGI (no FastAPI or Gradio import): ``app.py`` installs it on Gradio's FastAPI app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_ROUTES: tuple[str, ...] = ("/upload", "/process_recording")


class RequestLimits:
    """Wraps an ASGI app: bodies of at most ``max_body_bytes`` bytes, no uploads."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        path = scope.get("path", "").rstrip("/")
        content_type = headers.get(b"content-type", b"").lower()
        if path.endswith(UPLOAD_ROUTES) or content_type.startswith(b"multipart/"):
            await _answer(send, 403, "this app accepts no uploads")
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _answer(send, 413, self._too_large())
            return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started:
                        await _answer(send, 413, self._too_large())
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _too_large(self) -> str:
        return f"request body over the limit of {self.max_body_bytes} bytes"


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
