"""Running the app on uvicorn, with a graceful stop: SIGTERM or SIGINT stops accepting connections, scores what is
queued (the batcher stops waiting for fuller batches), answers the open requests, and the process exits 0.

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


def run(app, service: QualityService, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until SIGTERM/SIGINT; returns after a graceful drain."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(service.limits.timeout_s) + 10, server_header=False)
    _Server(config, service).run()


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")
