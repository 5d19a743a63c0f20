"""Reading a multipart/form-data body into its parts, every one of them an image: a part with a filename is keyed by
it, a part without one (which form parsers turn into a text field) by the SHA-256 of its bytes, as a raw body
without `?name=` is. Nothing a client sends is dropped. python-multipart parses; the body is already bounded by
the upload limit, so the parts are kept in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


class Malformed(Exception):
    """The body is not a well-formed multipart body (its message says why)."""


class TooManyParts(Exception):
    """More parts than the request may carry images."""


@dataclass
class Part:
    filename: str | None = None  # as sent (bytes that are not UTF-8 kept as surrogate escapes)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)

    @property
    def key(self) -> str:
        """What keys the part's view draws: its filename, else the SHA-256 of its bytes."""
        return self.filename if self.filename else hashlib.sha256(self.data).hexdigest()


async def read_parts(content_type: str, stream, max_parts: int) -> list[Part]:
    """The parts of a multipart body (`stream`: the request's body chunks, an async iterator); Malformed or
    TooManyParts."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Malformed("missing boundary in the Content-Type header")
    parts: list[Part] = []
    current = Part()
    name, value = bytearray(), bytearray()

    def part_begin() -> None:
        nonlocal current
        current = Part()
        if len(parts) >= max_parts:
            raise TooManyParts()

    def header_end() -> None:
        current.headers.append((bytes(name).lower(), bytes(value)))
        name.clear()
        value.clear()

    def headers_finished() -> None:
        disposition = dict(current.headers).get(b"content-disposition")
        if disposition is None:
            raise Malformed("a part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise Malformed('a part\'s Content-Disposition header has no "name"')
        if options.get(b"filename"):  # raw bytes, as a file name's are hashed (engine.perturbations)
            current.filename = options[b"filename"].decode("utf-8", "surrogateescape")

    callbacks = {
        "on_part_begin": part_begin,
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
        "on_headers_finished": headers_finished,
        "on_part_data": lambda data, start, end: current.data.extend(data[start:end]),
        "on_part_end": lambda: parts.append(current),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise Malformed(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None
    return parts
