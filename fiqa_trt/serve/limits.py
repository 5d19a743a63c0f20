"""What one request may carry, and the request-level rejections (status + one-line JSON message).

Limits: the API key, checked before anything else (an unauthenticated client learns nothing, not even the upload
limit); the time a client may take to send its headers and its body (`read_timeout_s`: a slow client is answered
408 and disconnected instead of holding a connection); the body size (checked against Content-Length first, then
counted as the body streams in); images per request; decoded pixels per image and per request (read from the
headers before anything is decoded, so a decompression bomb is refused without being inflated); decoded pixels in
flight over all requests (the batcher's budget); and the time a request may wait for its scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa_trt.engine.inputs import Item, check_encoded


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 32 * 1024 * 1024
    max_images: int = 64
    max_pixels: int = 40_000_000  # width * height of one decoded image
    max_request_pixels: int = 64_000_000  # of all the images of one request
    max_inflight_pixels: int = 128_000_000  # of all the images queued or being scored
    timeout_s: float = 30.0
    read_timeout_s: float = 30.0  # to send the headers, then the body

    def to_dict(self) -> dict:
        return dict(max_upload_bytes=self.max_upload_bytes, max_images=self.max_images, max_pixels=self.max_pixels,
                    max_request_pixels=self.max_request_pixels, max_inflight_pixels=self.max_inflight_pixels,
                    timeout_s=self.timeout_s, read_timeout_s=self.read_timeout_s)


class Rejected(Exception):
    """A request refused as a whole: HTTP status, a one-line message, optional headers and per-image details."""

    def __init__(self, status: int, message: str, headers: dict | None = None, images: list | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.images = status, message, headers or {}, images

    def body(self) -> dict:
        out = {"error": self.message}
        if self.images is not None:
            out["images"] = self.images
        return out


class BodyTooLarge(Exception):
    """Raised from the wrapped ASGI `receive` once the body passes the upload limit."""


class BodyTooSlow(Exception):
    """Raised from the wrapped ASGI `receive` when the body is not complete within the read timeout."""


class Guard:
    """ASGI middleware, outermost: 401 for a missing or wrong API key on every route but /healthz (compared in
    constant time, before the size is looked at); 413 for a Content-Length over the limit; then, as the body
    streams in, BodyTooLarge past the limit and BodyTooSlow past the read timeout, raised in the handler that reads
    it (which answers 413 / 408)."""

    OPEN = ("/healthz",)

    def __init__(self, app, max_bytes: int, read_timeout_s: float, api_key: str | None = None,
                 on_unauthorized=None):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s
        self.api_key, self.on_unauthorized = api_key, on_unauthorized

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse

        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope.get("path") not in self.OPEN and not self._authorized(headers):
            if self.on_unauthorized is not None:
                self.on_unauthorized()
            response = JSONResponse({"error": UNAUTHORIZED}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
            return await response(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"error": too_large_message(self.max_bytes)}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        seen, complete = 0, False

        async def guarded():
            nonlocal seen, complete
            if complete:  # the body is in: what follows is the disconnect, awaited without a limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise BodyTooSlow() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
                complete = not message.get("more_body", False)
            return message

        return await self.app(scope, guarded, send)

    def _authorized(self, headers: dict) -> bool:
        import hmac

        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if not given and auth.lower().startswith(b"bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given, self.api_key.encode())


UNAUTHORIZED = "missing or wrong API key (send X-API-Key: KEY or Authorization: Bearer KEY)"


def too_slow_message(seconds: float) -> str:
    return f"the request was not sent within the read timeout of {seconds:g} s"


def too_large_message(max_bytes: int) -> str:
    return f"request body over the upload limit of {max_bytes} bytes"


def check_upload(name: str, key: str, data: bytes, limits: Limits) -> Item:
    """An uploaded image as an Item (header checked, as `score` checks a file); `error` set for what cannot be
    scored, including images whose decoded size would pass `limits.max_pixels`."""
    item = check_encoded(Item(name, key), data)
    if item.error is None:
        h, w = item.size
        if h * w > limits.max_pixels:
            item.data, item.error = None, f"image too large: {w}x{h} pixels (limit {limits.max_pixels})"
    return item


def check_request_pixels(items: list[Item], limits: Limits) -> None:
    """Rejected(413) when the images of one request would decode to more pixels than its budget."""
    total = sum(it.size[0] * it.size[1] for it in items if it.error is None and it.size is not None)
    if total > limits.max_request_pixels:
        raise Rejected(413, f"the request's images decode to {total} pixels, over the per-request budget of "
                       f"{limits.max_request_pixels} (send fewer or smaller images per request)")


def status_for_failures(items: list[Item]) -> int:
    """The status of a request none of whose images can be scored: 413 when one is over the pixel limit,
    415 when they are not images of a supported format, 400 otherwise (empty, too small)."""
    errors = [it.error or "" for it in items]
    if any(e.startswith("image too large") for e in errors):
        return 413
    if any(e.startswith(("not an image", "unsupported image format", "damaged image header")) for e in errors):
        return 415
    return 400
