"""The HTTP/1.1 protocol `sbt serve` runs: uvicorn's httptools protocol with a bound on request headers.

uvicorn bounds header size only for its h11 protocol; with httptools it buffers whatever a client sends
before the blank line (megabytes of one header, or a hundred thousand header lines) before the app is
even called. Here the request line plus headers may take at most MAX_HEADER_BYTES; past that the client
gets 431 and the connection is closed, as a proxy in front would do. The app never sees such a request,
so it is not audited (like uvicorn's own 400 for a malformed request); it is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 32 * 1024  # room for an 8 KiB token (refused later with 401) and ordinary headers

log = logging.getLogger("sbt.http")

_REFUSAL = b"request header fields too large"


class _HeadersTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts twice: what the parser has handed over (a whole request in one read), and what arrived
    while the headers were still incomplete (one huge header trickling in over many reads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._parsed_bytes = 0
        self._pending_bytes = 0
        self._too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._parsed_bytes = self._pending_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            raise _HeadersTooLarge  # httptools stops parsing; uvicorn calls send_400_response

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_headers or self.transport.is_closing():
            return
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        client = self.client[0] if self.client else None
        log.warning("request headers over %d bytes from %s; answered 431", MAX_HEADER_BYTES, client)
        self._send_431()

    def _send_431(self) -> None:
        content = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(_REFUSAL)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            _REFUSAL,
        ])
        self.transport.write(b"".join(content))
        self.transport.close()
