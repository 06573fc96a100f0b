#!/usr/bin/env python3
"""Receives OTLP/HTTP protobuf (what the rotel collector forwards) and appends every request,
decoded by the official OpenTelemetry protobuf package, as one JSON line to a file:
{"signal": "traces"|"metrics"|"logs", "request": <OTLP JSON>}.

It also serves as a collector netsonde exports to directly, to check what rotel does not show:
request headers and compression (recorded with each request), TLS, Retry-After and partial
success.

Usage: otlp_sink.py PORT OUT_FILE [--fail-first N] [--reject N] [--tls CERT KEY] [--delay-ms N]
  --fail-first N   answer the first N requests with 503 and `Retry-After: 1`.
  --reject N       report N rejected items (partial success) in every successful answer.
  --tls CERT KEY   serve HTTPS with this certificate and key (PEM files).
  --delay-ms N     answer each request N ms after it arrived (a slow collector).

Each line also records `in_flight`: how many requests of its signal the sink held at once
when it arrived, itself included.
"""
import argparse
import gzip
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

REQUESTS = {
    "/v1/traces": ("traces", trace_service_pb2.ExportTraceServiceRequest,
                   trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": ("metrics", metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse),
    "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest,
                 logs_service_pb2.ExportLogsServiceResponse),
}

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("out")
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--reject", type=int, default=0)
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
parser.add_argument("--delay-ms", type=int, default=0)
args = parser.parse_args()
out_path = args.out
lock = threading.Lock()
state = {"requests": 0, "in_flight": {}}
REJECTED_FIELD = {"traces": "rejected_spans", "metrics": "rejected_data_points",
                  "logs": "rejected_log_records"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        route = REQUESTS.get(self.path)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        signal = route[0]
        with lock:
            state["requests"] += 1
            failing = state["requests"] <= args.fail_first
            in_flight = state["in_flight"].get(signal, 0) + 1
            state["in_flight"][signal] = in_flight
        self.held = signal
        try:
            self.answer(route, body, failing, in_flight)
        finally:
            self.release()

    def release(self):
        """The request is no longer held: before its answer leaves, since the client may send
        its next one as soon as it has the answer."""
        with lock:
            if self.held is not None:
                state["in_flight"][self.held] -= 1
                self.held = None

    def answer(self, route, body, failing, in_flight):
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        if failing:
            self.release()
            self.send_response(503)
            self.send_header("retry-after", "1")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        signal, request_type, response_type = route
        request = request_type()
        request.ParseFromString(body)
        line = json.dumps({"signal": signal, "request": MessageToDict(request),
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "in_flight": in_flight})
        with lock, open(out_path, "a") as out:
            out.write(line + "\n")
        response = response_type()
        if args.reject:
            setattr(response.partial_success, REJECTED_FIELD[signal], args.reject)
            response.partial_success.error_message = "the sink rejects some on purpose"
        reply = response.SerializeToString()
        self.release()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
if args.tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls[0], args.tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
