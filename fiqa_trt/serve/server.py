"""Running the app on uvicorn, with a graceful stop: SIGTERM or SIGINT stops accepting connections, scores what is
queued (the batcher stops waiting for fuller batches), answers the open requests, and the process exits 0.

A client must send its request headers within the read timeout of opening the connection (or of starting its next
request on a kept-alive one): uvicorn has no such limit, so the HTTP protocol is uvicorn's httptools protocol with
a timer that answers 408 and closes the connection (the body's own limit is `limits.Guard`'s).

uvicorn re-raises a caught signal once it has shut down (so the process would die of SIGTERM); this server does
not: a drained stop is a clean exit. A second SIGINT still forces uvicorn to quit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading

import uvicorn

from fiqa_trt.serve.app import QualityService

HANDLED = (signal.SIGINT, signal.SIGTERM)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: QualityService):
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if self._loop is not None and not self.should_exit:  # drain from the loop, not inside the signal handler
            self._loop.call_soon_threadsafe(self.service.begin_drain)
        super().handle_exit(sig, frame)


def timed_http(read_timeout_s: float):
    """uvicorn's httptools protocol, with the headers of each request due within `read_timeout_s`."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from fiqa_trt.serve.limits import too_slow_message

    body = ('{"error": "%s"}' % too_slow_message(read_timeout_s)).encode()
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n" % len(body)) + body

    class TimedHttp(HttpToolsProtocol):
        _headers_due = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._headers_due = self.loop.call_later(read_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
                self._headers_due = None

        def _too_slow(self) -> None:
            self._headers_due = None
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return TimedHttp


def run(app, service: QualityService, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until SIGTERM/SIGINT; returns after a graceful drain."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(service.limits.timeout_s) + 10, server_header=False,
                            http=timed_http(service.limits.read_timeout_s))
    _Server(config, service).run()


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")
