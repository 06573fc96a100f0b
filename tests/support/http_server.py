"""HTTP/1.1 test server for netsonde's capture tests (loopback only).

Routes:
  GET  /chunked     200, Transfer-Encoding: chunked, three chunks written separately
  POST /echo        200, body: the number of request body bytes received
  GET  /big         200, 1 MiB body with Content-Length, written in one call
  GET  /close       200 without Content-Length, body ends when the connection closes
  anything else     404

Usage: http_server.py HOST PORT   (port 0 picks one; prints "ready PORT" once listening)
"""
import http.server
import socketserver
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for part in (b"first chunk\n", b"second, a bit longer chunk\n", b"third\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/big":
            body = b"x" * (1 << 20)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/items/"):
            body = b"an item\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/fail":
            self.send_error(503)
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"the body ends when the connection does\n")
            self.close_connection = True
        else:
            self.send_error(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        received = len(self.rfile.read(length))
        body = str(received).encode()
        self.send_response(200 if self.path == "/echo" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    server = Server((sys.argv[1], int(sys.argv[2])), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()
