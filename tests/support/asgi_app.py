"""A minimal ASGI app for hypercorn: the test server for HTTP/2 reached by `Upgrade: h2c` (nginx
does not do the upgrade) and for HTTP/2 from a Python server. /missing answers 404; /bytes/N
answers N bytes that look random, sent in pieces of up to 64 KiB; everything else 200 with a
fixed body. /hang never answers: it waits for the client to go (hypercorn then logs the
request with no status)."""

import random

CHUNK = 64 * 1024


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/hang":
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    if path.startswith("/bytes/"):
        size = int(path[len("/bytes/"):])
        body = random.Random(size).randbytes(size)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"),
                        (b"content-length", str(size).encode())],
        })
        for at in range(0, size, CHUNK):
            more = at + CHUNK < size
            await send({"type": "http.response.body", "body": body[at:at + CHUNK],
                        "more_body": more})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
        return
    status, body = (404, b"not here\n") if path == "/missing" else (200, b"upgraded hello\n")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
