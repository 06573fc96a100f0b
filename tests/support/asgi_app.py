"""A minimal ASGI app for hypercorn, the test server for HTTP/2 reached by `Upgrade: h2c`
(nginx does not do the upgrade). /missing answers 404; everything else 200 with a fixed body."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    status, body = (404, b"not here\n") if scope["path"] == "/missing" else (200, b"upgraded hello\n")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
