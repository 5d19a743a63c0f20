"""The HTTP routes (FastAPI): POST /v1/quality, GET /healthz, /readyz, /v1/model, /metrics.

POST /v1/quality takes one or more images, as multipart/form-data (every part is an image: its filename keys the
view draws, as a file's path relative to INPUT does in `fiqa-trt score`, and a part without a filename is keyed by
the SHA-256 of its bytes) or as a raw image body (image/* or application/octet-stream; `?name=` keys it, else the
body's SHA-256). It answers one row per image with the fields of a `score` row (path, quality, cos_<view>...,
error; det_score and box with alignment). An image that cannot be scored is an error row in a 200 while another
image of the request is fine; a request none of whose images can be scored (found from the headers, or when they
fail to decode), or that is malformed, too large or of another content type, is refused with 400/413/415 and
{"error": message}. A full queue or a spent pixel budget answers 503 with Retry-After, a request that outlives the
timeout 504, a client too slow to send its request 408. Every route but /healthz needs the API key when one is set
(X-API-Key or Authorization: Bearer), compared in constant time before anything else. No traceback reaches a
client: an unexpected failure is logged and answered 500 {"error": "internal error"}.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fiqa_trt.engine import sinks
from fiqa_trt.engine.inputs import Item, shown
from fiqa_trt.engine.scorer import Result, Scorer
from fiqa_trt.serve.batcher import Batcher, Draining, QueueFull
from fiqa_trt.serve.limits import (BodyTooLarge, BodyTooSlow, Guard, Limits, Rejected, check_request_pixels,
                                   check_upload, status_for_failures, too_large_message, too_slow_message)
from fiqa_trt.serve.multipart import Malformed, TooManyParts, read_parts
from fiqa_trt.serve.metrics import Metrics, RequestMetrics

log = logging.getLogger("fiqa_trt")
RAW_TYPES = ("image/", "application/octet-stream")


@dataclass
class Settings:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    queue: int = 1024
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    model_info: dict = field(default_factory=dict)  # what /v1/model reports besides the scorer's own settings


class ClientGone(Exception):
    """The client disconnected while its images waited."""


class QualityService:
    """One scorer behind one batcher, with the state the routes share (readiness, draining, metrics)."""

    def __init__(self, scorer: Scorer, settings: Settings):
        self.scorer, self.settings, self.limits = scorer, settings, settings.limits
        self.batcher: Batcher | None = None
        self.metrics = Metrics(depth=lambda: self.batcher.depth if self.batcher else 0)
        self.columns = sinks.columns(scorer.view_labels, faces=scorer.aligns_photos)  # as `score` writes
        self.ready = False
        self.not_ready_reason = "warming up"

    # ---- life cycle ----

    def start(self) -> None:
        s = self.settings
        self.batcher = Batcher(self.scorer.score_encoded, max_batch=s.max_batch, max_wait_s=s.max_wait_ms / 1000,
                               capacity=s.queue, observe=self.metrics.observe_batch,
                               max_pixels=self.limits.max_inflight_pixels)

    async def warm_up(self) -> None:
        """Score one generated image through the batcher (builds the pipeline, first inference), then a batch of
        them whose time is the first measure of the drain rate (the first one's is not), then ready."""
        import cv2

        h, w = self.scorer.runner.config.input_size
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
        data = np.frombuffer(cv2.imencode(".png", image)[1].tobytes(), np.uint8)
        try:
            for count in (1, min(8, self.settings.max_batch)):
                jobs = self.batcher.submit([check_upload(f"warm-up-{i}", f"warm-up-{i}", data.tobytes(), self.limits)
                                            for i in range(count)])
                await asyncio.gather(*(job.future for job in jobs))
                if count == 1:
                    self.batcher.reset_rate()
        except Exception as exc:  # noqa: BLE001 - the service stays alive and says why it is not ready
            log.error("warm-up failed: %s", exc)
            self.not_ready_reason = f"warm-up failed: {exc}"
            return
        if not self.batcher.draining:
            self.ready = True

    def begin_drain(self) -> None:
        """Stop taking images and score what is queued at once (the server then waits for the open requests)."""
        self.ready, self.not_ready_reason = False, "shutting down"
        if self.batcher is not None:
            self.batcher.drain()

    async def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.drain()
            await asyncio.to_thread(self.batcher.join, self.limits.timeout_s + 5)

    # ---- requests ----

    def model_info(self) -> dict:
        sc, runner = self.scorer, self.scorer.runner
        return {**self.settings.model_info, "sha256": getattr(runner, "sha256", None),
                "config": runner.config.to_dict(), "backend": runner.name,
                "precision": getattr(runner, "precision", "fp32"), "device": str(sc.device),
                "perturb": [spec.label() for spec in sc.specs], "views": sc.view_labels, "agg": sc.agg,
                "seed": sc.seed, "align": sc.aligns_photos,
                "batching": {"max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms,
                             "queue": self.settings.queue},
                "limits": self.limits.to_dict()}

    def row(self, result: Result) -> dict:
        """The fields of a `score` row (sinks.row: whatever columns `score` writes, a 0-100 score among them once
        sinks has one), with the face's detector score and box when photos are aligned."""
        out = sinks.row(result, self.columns)  # aligned: det_score and box_left/top/right/bottom, as in `score`
        if self.scorer.aligns_photos:
            out["box"] = list(result.box) if result.box is not None else None
        return out

    def failed_row(self, item: Item) -> dict:
        nan = np.full(len(self.scorer.views), np.nan, np.float32)
        return self.row(Result(item.path, float("nan"), nan, item.error))

    async def score(self, request: Request, uploads: list[tuple[str, str, bytes]]) -> dict:
        items = [check_upload(name, key, data, self.limits) for name, key, data in uploads]
        ok = [it for it in items if it.error is None]
        if not ok:
            status = status_for_failures(items)
            self.metrics.images.labels("error").inc(len(items))
            raise Rejected(status, "no image of the request can be scored: " + items[0].error,
                           images=[self.failed_row(it) for it in items])
        check_request_pixels(ok, self.limits)  # before anything is decoded
        jobs = self.batcher.submit(ok)
        results = iter(await self._wait(request, jobs))
        rows, outcomes = [], []
        for it in items:
            result = next(results) if it.error is None else it
            outcomes.append(result)
            rows.append(self.row(result) if it.error is None else self.failed_row(it))
        failed = sum(r["error"] is not None for r in rows)
        self.metrics.images.labels("scored").inc(len(rows) - failed)
        self.metrics.images.labels("error").inc(failed)
        if failed == len(rows):  # none could be decoded after all (a truncated file passes the header check)
            first = next(o.error for o in outcomes if o.error)
            raise Rejected(status_for_failures(outcomes), "no image of the request can be scored: " + first,
                           images=rows)
        return {"images": rows, "scored": len(rows) - failed, "failed": failed}

    async def _wait(self, request: Request, jobs) -> list[Result]:
        """The results of `jobs`, or ClientGone / Rejected(504) with the images still queued taken back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.timeout_s
        futures = [j.future for j in jobs]
        waiting = set(futures)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while waiting and not gone.done() and (left := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait(waiting | {gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                waiting -= done
        finally:
            gone.cancel()
        if not waiting:
            return [f.result() for f in futures]
        dropped = self.batcher.withdraw(jobs)
        for f in futures:
            f.cancel()
        if gone.done() and not gone.cancelled():
            gone.exception()  # retrieved (a receive that failed means the client is gone too)
            self.metrics.dropped.labels("disconnected").inc(dropped)
            raise ClientGone()
        self.metrics.dropped.labels("timeout").inc(dropped)
        raise Rejected(504, f"no result within the request timeout of {self.limits.timeout_s:g} s")


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read: the server's next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, str, bytes]]:
    """(name, key, bytes) per image of the request; Rejected for a malformed, empty or unsupported request."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            parts = await read_parts(request.headers["content-type"], request.stream(), limits.max_images)
        except TooManyParts:
            raise Rejected(413, too_many_message(limits)) from None
        except Malformed as exc:
            raise Rejected(400, f"malformed multipart body: {exc}") from None
        uploads = [(shown(part.key), part.key, bytes(part.data)) for part in parts]
        if not uploads:
            raise Rejected(400, "no image in the request: send multipart parts or a raw image body")
    elif ctype.startswith(RAW_TYPES):
        data = await request.body()
        if not data:
            raise Rejected(400, "empty request body: send an image")
        name = request.query_params.get("name") or hashlib.sha256(data).hexdigest()
        uploads = [(name, name, data)]
    else:
        raise Rejected(415, f"unsupported content type '{ctype or 'none'}': send multipart/form-data or a raw "
                       "image body (image/*, application/octet-stream)")
    if len(uploads) > limits.max_images:
        raise Rejected(413, too_many_message(limits))
    return uploads


def too_many_message(limits: Limits) -> str:
    return f"too many images: at most {limits.max_images} per request"


def create_app(service: QualityService) -> FastAPI:
    """The ASGI app: routes, API key, limits and error handlers around `service` (started by the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        warm = asyncio.create_task(service.warm_up())
        yield
        warm.cancel()
        await service.stop()

    app = FastAPI(title="fiqa-trt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        if service.ready:
            return {"ready": True}
        return JSONResponse({"ready": False, "reason": service.not_ready_reason}, status_code=503)

    @app.get("/v1/model")
    async def model():
        return service.model_info()

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.post("/v1/quality")
    async def quality(request: Request):
        if service.batcher is None or service.batcher.draining:
            raise Draining()
        uploads = await read_uploads(request, service.limits)
        return JSONResponse(await service.score(request, uploads))  # plain JSON types: no encoder pass

    def reject(status: int, message: str, reason: str, headers: dict | None = None) -> JSONResponse:
        service.metrics.rejected.labels(reason).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected):
        if exc.status != 401:
            service.metrics.rejected.labels(_REASONS.get(exc.status, str(exc.status))).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge):
        return reject(413, too_large_message(service.limits.max_upload_bytes), "too_large", {"Connection": "close"})

    @app.exception_handler(BodyTooSlow)
    async def body_too_slow(request: Request, exc: BodyTooSlow):
        return reject(408, too_slow_message(service.limits.read_timeout_s), "too_slow", {"Connection": "close"})

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return reject(503, str(exc), "queue_full", {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(Draining)
    async def draining(request: Request, exc: Draining):
        return reject(503, "the service is shutting down", "shutting_down", {"Retry-After": "1"})

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)  # gone while its body was being read: nothing was queued yet
    async def client_gone(request: Request, exc: Exception):
        return Response(status_code=499)  # nobody reads it; the client has gone

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return reject(400, "bad request: " + "; ".join(str(e.get("msg")) for e in exc.errors()), "bad_request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("internal error on %s: %r", request.url.path, exc, exc_info=exc)
        service.metrics.internal_errors.inc()
        return JSONResponse({"error": "internal error"}, status_code=500)

    app.add_middleware(Guard, max_bytes=service.limits.max_upload_bytes, read_timeout_s=service.limits.read_timeout_s,
                       api_key=service.settings.api_key,
                       on_unauthorized=service.metrics.rejected.labels("unauthorized").inc)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app


_REASONS = {400: "bad_request", 413: "too_large", 415: "unsupported", 504: "timeout", 503: "unavailable"}
