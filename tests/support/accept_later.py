"""A server that accepts only when told, for netsonde's accept-time test.

  accept_later.py HOST PORT
      Listens and prints "ready". The kernel completes handshakes and queues the connections;
      this accepts one only after a line arrives on stdin, so the connection waits,
      established, in the listen queue meanwhile. It answers that connection's HTTP/1.1
      request with 204 and closes it.
"""
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(8)
    print("ready", flush=True)
    sys.stdin.readline()
    conn, _ = listener.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    conn.close()


if __name__ == "__main__":
    main()
