"""An HTTP/2 client (prior knowledge, cleartext) on one connection, made with the `h2` library:
a burst that outruns a small ring buffer, then requests at a walking pace.

  h2_burst.py PORT BURST_PATH STREAMS ROUNDS AFTER

Sends ROUNDS rounds of STREAMS concurrent GETs of BURST_PATH (reading everything as fast as it
comes), waits a second, sends a PING whose stream word has its reserved bit set (RFC 9113 says
a receiver ignores that bit; no sender sets it, so a parser looking for frame boundaries does
not believe in it), then GETs /ka?after=N for N in 0..AFTER one at a time, 20 ms apart, all on
the same connection. Prints what it got, as JSON: the burst's statuses and body sizes, and each
later request's path, status and body size.
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def main():
    port, burst_path, streams, rounds, after = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    sock = socket.create_connection(("127.0.0.1", int(port)))
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    # Room for many large responses at once.
    conn.increment_flow_control_window(1 << 30)
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
    sock.sendall(conn.data_to_send())

    def request(path):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
            (":path", path), ("user-agent", "h2-burst/1"),
        ], end_stream=True)
        return stream

    def run(paths):
        """Sends one GET per path at once; returns {stream: [path, status, body bytes]}."""
        results = {request(p): [p, None, 0] for p in paths}
        sock.sendall(conn.data_to_send())
        open_streams = set(results)
        while open_streams:
            data = sock.recv(1 << 20)
            if not data:
                raise SystemExit("connection closed")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(":status")
                    results[event.stream_id][1] = int(status)
                elif isinstance(event, h2.events.DataReceived):
                    results[event.stream_id][2] += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    open_streams.discard(event.stream_id)
            sock.sendall(conn.data_to_send())
        return list(results.values())

    burst = []
    for _ in range(rounds):
        burst.extend(run([burst_path] * streams))
    time.sleep(1)
    # Written raw: the h2 library would not set the bit. The answer (a PING ACK) is read below.
    sock.sendall(bytes([0, 0, 8, 0x6, 0, 0x80, 0, 0, 0]) + b"netsonde")
    time.sleep(0.2)
    later = []
    for n in range(after):
        later.extend(run([f"/ka?after={n}"]))
        time.sleep(0.02)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps({"burst": burst, "after": later}), flush=True)


if __name__ == "__main__":
    main()
