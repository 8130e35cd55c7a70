#!/usr/bin/env python3
"""The stalled-bodies attack against helios-gateway, and the memory it costs (issue 17, 5).

Starts a release gateway on 127.0.0.1 with a fresh data directory, reads its RSS at idle,
then opens CONNECTIONS sockets that each send the head of a `PUT /api/v1/kv/x` declaring a
1 MiB body, 64 KiB of that body, and then stall. Two rounds: without a token (the probe's
attack: refused on the head, the body is never read) and with a valid token (the bodies
are read, within `http.body_bytes_in_flight_max`). Prints the RSS after each round and
what the sockets got back. Target: at most +64 MiB over idle. Not a timed test: a script,
run by hand (figures go in docs/performance.md).

Usage: python3 benches/stalled_bodies.py [CONNECTIONS]   (default 400)
Connections come from 127.0.0.1, 127.0.0.2, ... (at most 200 per address, below
`http.connections_per_address_max`), so the per-address cap is not what stops them.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECTIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
PORT = 18490
PASSWORD = "stalled-bodies-Quartz-91-lantern"
DECLARED = 1024 * 1024
SENT = 64 * 1024


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def http_json(method, path, body=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def attack(token):
    socks = []
    head = f"PUT /api/v1/kv/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {DECLARED}\r\n\r\n"
    chunk = b'{"value":"' + b"a" * (SENT - 10)
    for i in range(CONNECTIONS):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i // 200}", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", PORT))
        s.sendall(head.encode())
        try:
            s.sendall(chunk)
        except OSError:
            pass  # refused and closed already
        socks.append(s)
    time.sleep(3)
    return socks


def outcome(socks):
    answers = {}
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(64)
            key = data[:12].decode(errors="replace") if data else "closed"
        except BlockingIOError:
            key = "no answer yet (body being read)"
        except OSError as e:
            key = f"error {e.errno}"
        answers[key] = answers.get(key, 0) + 1
        s.close()
    return answers


def main():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "helios-bins", "--bin", "helios-gateway"],
        cwd=ROOT,
        check=True,
    )
    work = tempfile.mkdtemp()
    # The per-user rate limit is raised so that the authenticated round reaches the body
    # budget instead of stopping at 429.
    env = dict(
        os.environ,
        HELIOS_ADMIN_PASSWORD=PASSWORD,
        HELIOS_LOG__LEVEL="warn",
        HELIOS_RATE_LIMIT__CAPACITY="100000",
        HELIOS_RATE_LIMIT__REFILL_PER_S="100000",
    )
    gw = subprocess.Popen(
        [
            f"{ROOT}/target/release/helios-gateway",
            "--data-dir", f"{work}/data",
            "--listen", f"127.0.0.1:{PORT}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(f"{work}/gw.log", "w"),
    )
    try:
        for _ in range(100):
            try:
                http_json("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        token = http_json(
            "POST", "/api/v1/auth/login", {"username": "admin", "password": PASSWORD}
        )["access_token"]
        http_json("PUT", "/api/v1/kv/warm", {"value": 1}, token)
        idle = rss_mib(gw.pid)
        print(f"idle RSS: {idle:.1f} MiB ({CONNECTIONS} connections per round, "
              f"{DECLARED >> 10} KiB declared, {SENT >> 10} KiB sent each)")
        for name, tok in [("without a token", None), ("with a valid token", token)]:
            socks = attack(tok)
            peak = rss_mib(gw.pid)
            print(f"{name}: RSS {peak:.1f} MiB (+{peak - idle:.1f} MiB); "
                  f"answers: {outcome(socks)}")
            time.sleep(1)
        after = rss_mib(gw.pid)
        print(f"after both rounds: RSS {after:.1f} MiB (+{after - idle:.1f} MiB)")
    finally:
        gw.terminate()
        gw.wait(timeout=30)


if __name__ == "__main__":
    main()
