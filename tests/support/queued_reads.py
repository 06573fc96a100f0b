"""A TCP pair on loopback whose receiver leaves data queued until told to read it, for
netsonde's kernel-layer test of packets that arrived before the agent started.

  queued_reads.py EARLY LATE
      Connects a client to a server in this process, sends EARLY messages of 100 bytes (one
      packet each, 20 ms apart) that the server does not read, and prints "queued". After a
      line on stdin the server reads them all; then LATE more messages are sent and each is
      read as it comes. Prints "read" and waits for another line before it exits.
"""
import socket
import sys
import time


def read_exactly(sock, n):
    got = 0
    while got < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("peer closed early")
        got += len(chunk)


def main():
    early, late = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server, _ = listener.accept()
    for _ in range(early):
        client.sendall(b"e" * 100)
        time.sleep(0.02)
    print("queued", flush=True)
    sys.stdin.readline()
    read_exactly(server, early * 100)
    for _ in range(late):
        client.sendall(b"l" * 100)
        read_exactly(server, 100)
    print("read", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
