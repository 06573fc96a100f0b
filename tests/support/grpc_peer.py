"""A real gRPC server and client (grpcio), for netsonde's gRPC tests.

No .proto: the methods take and return raw bytes (grpcio's generic handlers with no
serializers), which is all the wire needs.

  grpc_peer.py server             listens on 127.0.0.1 (a free port, printed), serves until
                                  stdin closes, then prints what it handled as JSON
  grpc_peer.py client PORT [SIZES]
                                  makes a fixed set of small calls on one channel or, with
                                  SIZES (bytes, comma-separated), for each size two unary Blob
                                  calls and one Chat stream of three messages each way; prints,
                                  as JSON, each call's method, status and message counts

The same service as grpc_go/ (gRPC-Go), so either peer can face the other.
"""

import json
import string
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "demo.Echo"
# Messages of up to 4 MiB and their 5-byte prefix must pass: the defaults stop at 4 MiB.
MAX_MESSAGE = 16 << 20
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
           ("grpc.max_send_message_length", MAX_MESSAGE)]
handled = []
lock = threading.Lock()


def note(method, code, requests, responses):
    with lock:
        handled.append(
            {"method": f"{SERVICE}/{method}", "status": code.name,
             "requests": requests, "responses": responses})


def say(request, context):
    if request == b"missing":
        note("Say", grpc.StatusCode.NOT_FOUND, 1, 0)
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    note("Say", grpc.StatusCode.OK, 1, 1)
    return request[::-1]


def blob(request, context):
    """As large an answer as the question."""
    note("Blob", grpc.StatusCode.OK, 1, 1)
    return request[::-1]


def fail(request, context):
    note("Fail", grpc.StatusCode.INTERNAL, 1, 0)
    context.abort(grpc.StatusCode.INTERNAL, "it broke")


def count(request, context):
    n = int(request)
    for i in range(n):
        yield str(i).encode()
    note("Count", grpc.StatusCode.OK, 1, n)


def total(request_iterator, context):
    n = 0
    for _ in request_iterator:
        n += 1
    note("Sum", grpc.StatusCode.OK, n, 1)
    return str(n).encode()


def chat(request_iterator, context):
    n = 0
    for message in request_iterator:
        n += 1
        yield message.upper()
    note("Chat", grpc.StatusCode.OK, n, n)


def serve():
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Blob": grpc.unary_unary_rpc_method_handler(blob),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Sum": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(grace=2).wait()
    print(json.dumps(handled), flush=True)


def client(port, sizes):
    calls = []
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
        def unary(method, request):
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            try:
                call(request, timeout=60)
                calls.append((method, "OK", 1, 1))
            except grpc.RpcError as e:
                calls.append((method, e.code().name, 1, 0))

        def chat(messages):
            replies = list(channel.stream_stream(f"/{SERVICE}/Chat")(iter(messages), timeout=60))
            calls.append(("Chat", "OK", len(messages), len(replies)))

        if not sizes:
            unary("Say", b"hello")
            unary("Say", b"again")
            unary("Say", b"missing")
            unary("Fail", b"x")
            unary("Nope", b"x")
            responses = list(channel.unary_stream(f"/{SERVICE}/Count")(b"3", timeout=10))
            calls.append(("Count", "OK", 1, len(responses)))
            channel.stream_unary(f"/{SERVICE}/Sum")(iter([b"a", b"b", b"c", b"d"]), timeout=10)
            calls.append(("Sum", "OK", 4, 1))
            chat([b"x", b"y"])
        for size in sizes:
            data = (string.ascii_lowercase * (size // 26 + 1))[:size].encode()
            unary("Blob", data)
            unary("Blob", data)
            chat([data, data, data])
    print(json.dumps([{"method": f"{SERVICE}/{m}", "status": s, "requests": q, "responses": r}
                      for m, s, q, r in calls]), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        sizes = [int(s) for s in sys.argv[3].split(",")] if len(sys.argv) > 3 else []
        client(int(sys.argv[2]), sizes)
