#!/usr/bin/env python3
"""Receives OTLP/HTTP protobuf (what the rotel collector forwards) and appends every request,
decoded by the official OpenTelemetry protobuf package, as one JSON line to a file:
{"signal": "traces"|"metrics"|"logs", "request": <OTLP JSON>}.

Usage: otlp_sink.py PORT OUT_FILE [--fail-first N]
  --fail-first N   answer the first N requests with 503 (to exercise the collector's retries).
"""
import gzip
import json
import sys
import threading
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

port = int(sys.argv[1])
out_path = sys.argv[2]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        route = REQUESTS.get(self.path)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        signal, request_type, response_type = route
        request = request_type()
        request.ParseFromString(body)
        line = json.dumps({"signal": signal, "request": MessageToDict(request)})
        with lock, open(out_path, "a") as out:
            out.write(line + "\n")
        reply = response_type().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
