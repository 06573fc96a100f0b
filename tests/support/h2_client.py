"""An HTTP/2 client (prior knowledge, cleartext) on one long-lived connection, made with the
`h2` library, whose HPACK encoder indexes what it sends: a connection netsonde joins late.

  h2_client.py PORT FIRST SECOND

GETs the comma-separated paths FIRST one after another, prints "ready", waits for a line on
stdin, GETs SECOND on the same connection, and prints SECOND's (path, status) as JSON.
"""

import json
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    def get(path):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
            (":path", path), ("user-agent", "h2-client/1"),
        ], end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        while True:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("connection closed")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    sock.sendall(conn.data_to_send())
                    return status
            sock.sendall(conn.data_to_send())

    for path in sys.argv[2].split(","):
        get(path)
    print("ready", flush=True)
    sys.stdin.readline()
    results = [(path, get(path)) for path in sys.argv[3].split(",")]
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps(results), flush=True)


main()
