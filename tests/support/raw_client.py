"""Raw-socket HTTP/1.1 clients for netsonde's capture tests (loopback only).

  raw_client.py pipeline HOST PORT PATH...
      Sends one GET per PATH in a single write (pipelining, the last with
      Connection: close) and reads until the server closes.

  raw_client.py syscalls MODE HOST PORT PATH
      One GET with Connection: close, sent and received through the syscalls MODE names:
      rw (write/read), vector (writev/readv, two buffers each), msg (sendmsg/recvmsg, two
      buffers each). Exercises netsonde's capture of each syscall family.

  raw_client.py preexisting HOST PORT PATH1 PATH2
      Connects and completes GET PATH1, prints "connected", waits for a line on
      stdin, then sends GET PATH2 on the same connection, reads its response and
      closes. Lets a test start netsonde while the connection is open.

  raw_client.py rounds HOST PORT N
      Connects, prints "connected" and waits for a line on stdin; then sends N GETs
      (/items/0, /items/1, ...) one after another on the same connection, reading each response;
      prints "done", waits for another line, and closes. Lets a test change the network
      (netem loss) around the requests without touching the handshake or the close.

  raw_client.py upload HOST PORT PATH BYTES NEXT_PATH
      On one connection: POST PATH with a body of BYTES bytes (no Expect: the body follows
      the head at once, whatever the server answers meanwhile), then GET NEXT_PATH with
      Connection: close; reads until the server closes and prints the status lines it got.

  raw_client.py replace HOST PORT N
      Opens N connections and completes a GET on each; then dup2s the first one's fd onto
      itself (which changes nothing) and completes another GET on it; then puts /dev/null at
      every connection's fd instead of closing it: with dup2 on even ones, dup3 (O_CLOEXEC)
      on odd ones. Prints "replaced" and waits for a line on stdin before it exits.

  raw_client.py slow HOST PORT N SECONDS
      Opens N connections, sends each a request head that never ends (slowloris), holds them
      SECONDS, then closes them.
"""
import socket
import sys


def request(path, host, close=False):
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def read_response(sock, buf):
    """Reads one Content-Length response from sock; returns leftover bytes."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed mid-head")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed mid-body")
        rest += data
    return rest[length:]


def syscalls(mode, host, port, path):
    import os

    sock = socket.create_connection((host, port))
    fd = sock.fileno()
    data = request(path, host, close=True)
    head, rest = data[:7], data[7:]
    if mode == "rw":
        os.write(fd, data)
        while os.read(fd, 65536):
            pass
    elif mode == "vector":
        os.writev(fd, [head, rest])
        while os.readv(fd, [bytearray(7), bytearray(65536)]):
            pass
    elif mode == "msg":
        sock.sendmsg([head, rest])
        while sock.recvmsg_into([bytearray(7), bytearray(65536)])[0]:
            pass
    else:
        raise SystemExit(f"unknown syscall mode {mode}")
    sock.close()


def upload(host, port, path, size, next_path):
    sock = socket.create_connection((host, port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"u" * 65536
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        sock.sendall(chunk[:n])
        sent += n
    sock.sendall(request(next_path, host, close=True))
    received = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    for line in received.split(b"\r\n"):
        if line.startswith(b"HTTP/1."):
            print(line.decode(), flush=True)
    sock.close()


def slow(host, port, n, seconds):
    import time

    socks = [socket.create_connection((host, port)) for _ in range(n)]
    for s in socks:
        s.sendall(f"GET /slow HTTP/1.1\r\nHost: {host}\r\nX-a: ".encode())
    time.sleep(seconds)
    for s in socks:
        s.close()


def replace(host, port, n):
    import os

    socks = [socket.create_connection((host, port)) for _ in range(n)]
    for s in socks:
        s.sendall(request("/index.html", host))
        read_response(s, b"")
    first = socks[0].fileno()
    os.dup2(first, first)
    socks[0].sendall(request("/ka", host))
    read_response(socks[0], b"")
    null = os.open(os.devnull, os.O_RDWR)
    for i, s in enumerate(socks):
        # inheritable=False: CPython calls dup3(null, fd, O_CLOEXEC); True: dup2(null, fd).
        # detach(): the socket object must not close the fd it no longer owns.
        os.dup2(null, s.detach(), inheritable=(i % 2 == 0))
    print("replaced", flush=True)
    sys.stdin.readline()


def main():
    if sys.argv[1] == "syscalls":
        syscalls(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    if sys.argv[1] == "upload":
        upload(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    if sys.argv[1] == "replace":
        replace(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    if sys.argv[1] == "slow":
        slow(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return
    mode, host, port, paths = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    sock = socket.create_connection((host, port))
    if mode == "pipeline":
        payload = b"".join(request(p, host, close=(i == len(paths) - 1)) for i, p in enumerate(paths))
        sock.sendall(payload)
        while sock.recv(65536):
            pass
    elif mode == "rounds":
        print("connected", flush=True)
        sys.stdin.readline()
        leftover = b""
        for i in range(int(paths[0])):
            sock.sendall(request(f"/items/{i}", host))
            leftover = read_response(sock, leftover)
        print("done", flush=True)
        sys.stdin.readline()
    elif mode == "preexisting":
        sock.sendall(request(paths[0], host))
        leftover = read_response(sock, b"")
        print("connected", flush=True)
        sys.stdin.readline()
        sock.sendall(request(paths[1], host))
        read_response(sock, leftover)
    else:
        raise SystemExit(f"unknown mode {mode}")
    sock.close()


if __name__ == "__main__":
    main()
