"""Request bodies read with a cap: a sender cannot make the webhook buffer more."""

from fastapi import Request


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds `limit` bytes (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
