#!/usr/bin/env python3
"""A 1 GiB download and a 1 GiB upload through helios-proxy, and the proxy's peak memory.

Starts a backend (this script, on 127.0.0.1) that streams SIZE bytes for GET /big and
counts the bytes of a PUT /sink, starts `helios-proxy --backend` in front of it, moves
both bodies through the proxy with raw sockets (nothing buffered whole on either side),
checks every byte arrived, and reads the proxy's peak resident set (VmHWM) from /proc.
Fails (exit 1) if it is over the bound: issue 20 asks for 64 MiB.

Usage: benches/proxy_big_body.py [PROXY_BINARY] [SIZE_MIB] [RSS_BOUND_MIB]
(defaults: target/release/helios-proxy, 1024, 64). Everything stays on 127.0.0.1.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

CHUNK = 1 << 20


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    size = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/big":
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        zeros = bytes(CHUNK)
        left = self.size
        while left:
            n = min(left, CHUNK)
            self.wfile.write(zeros[:n])
            left -= n

    def do_PUT(self):
        got = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                left = size
                while left:
                    b = self.rfile.read(min(left, CHUNK))
                    got += len(b)
                    left -= len(b)
                self.rfile.readline()
        else:
            left = int(self.headers["Content-Length"])
            while left:
                b = self.rfile.read(min(left, CHUNK))
                if not b:
                    break
                got += len(b)
                left -= len(b)
        body = str(got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_and_rest(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise SystemExit("connection closed before the response head")
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def download(port, size):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n\r\n")
        head, rest = head_and_rest(s)
        assert head.startswith("HTTP/1.1 200"), head
        got = len(rest)
        while True:
            b = s.recv(CHUNK)
            if not b:
                break
            got += len(b)
        return got


def upload(port, size):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"PUT /sink HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        zeros = bytes(CHUNK)
        left = size
        while left:
            n = min(left, CHUNK)
            s.sendall(zeros[:n])
            left -= n
        head, rest = head_and_rest(s)
        assert head.startswith("HTTP/1.1 200"), head
        while True:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        return int(rest)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/helios-proxy"
    size = int(sys.argv[2] if len(sys.argv) > 2 else 1024) << 20
    bound_mib = int(sys.argv[3] if len(sys.argv) > 3 else 64)
    Backend.size = size
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    env = dict(os.environ, HELIOS_LOG__LEVEL="warn")
    proxy = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--backend",
         f"http://127.0.0.1:{backend.server_address[1]}"],
        env=env,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.time() > deadline or proxy.poll() is not None:
                    raise SystemExit("the proxy did not start")
                time.sleep(0.05)
        base = peak_rss_kib(proxy.pid)
        t = time.time()
        down = download(port, size)
        t_down = time.time() - t
        t = time.time()
        up = upload(port, size)
        t_up = time.time() - t
        peak = peak_rss_kib(proxy.pid)
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
    mib = size >> 20
    print(f"download: {down} bytes in {t_down:.1f} s ({mib / t_down:.0f} MiB/s)")
    print(f"upload:   {up} bytes in {t_up:.1f} s ({mib / t_up:.0f} MiB/s)")
    print(f"proxy peak RSS: {peak / 1024:.1f} MiB (at start {base / 1024:.1f} MiB); bound {bound_mib} MiB")
    ok = down == size and up == size and 0 < peak <= bound_mib * 1024
    if not ok:
        print("FAILED", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
