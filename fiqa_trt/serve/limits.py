"""What one request may carry, and the request-level rejections (status + one-line JSON message).

Limits: the body size (checked against Content-Length first, then counted as the body streams in), images per
request, decoded pixels per image (read from the header before anything is decoded, so a decompression bomb is
refused without being inflated), and the time a request may wait for its scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa_trt.engine.inputs import Item, check_encoded


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 32 * 1024 * 1024
    max_images: int = 64
    max_pixels: int = 40_000_000  # width * height of one decoded image
    timeout_s: float = 30.0

    def to_dict(self) -> dict:
        return dict(max_upload_bytes=self.max_upload_bytes, max_images=self.max_images, max_pixels=self.max_pixels,
                    timeout_s=self.timeout_s)


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


class UploadLimit:
    """ASGI middleware: 413 for a Content-Length over the limit; a longer streamed body raises BodyTooLarge in the
    handler that reads it (which answers 413)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            from starlette.responses import JSONResponse

            response = JSONResponse({"error": too_large_message(self.max_bytes)}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        return await self.app(scope, counted, send)


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


def status_for_failures(items: list[Item]) -> int:
    """The status of a request none of whose images can be scored: 413 when one is over the pixel limit,
    415 when they are not images of a supported format, 400 otherwise (empty, too small)."""
    errors = [it.error or "" for it in items]
    if any(e.startswith("image too large") for e in errors):
        return 413
    if any(e.startswith(("not an image", "unsupported image format", "damaged image header")) for e in errors):
        return 415
    return 400
