#!/usr/bin/env python3
"""What a log append + fdatasync costs on this machine's disk, by how the file is laid out
(docs/durability.md, "AOF segment"): appends into a growing file (what a plain append-only
file does), into space preallocated with fallocate (unwritten extents, converted on write),
and into padding already written (what ATLAS's FsStorage keeps ahead of its appends).
1000- and 2100-byte appends are about one commit group of 25 INCRs for Redis's RESP AOF and
for ATLAS's JSON lines.

Usage: python3 benches/log_fdatasync.py [DIR] [APPENDS]   (default: a temp dir, 3000)
"""
import os
import sys
import tempfile
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
# Room for every append of the biggest size (plus slack), so no run grows the file.
PREALLOC = max(16 << 20, N * 2100 + (1 << 20))


def run(layout, size):
    path = os.path.join(DIR, "log_fdatasync.bin")
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    if layout == "padded":
        chunk = b"\n" * (1 << 20)
        for _ in range(-(-PREALLOC // len(chunk))):
            os.write(fd, chunk)
        os.fsync(fd)
    elif layout == "fallocate":
        os.posix_fallocate(fd, 0, PREALLOC)
        os.fsync(fd)
    buf = b"x" * size
    off = 0
    t0 = time.perf_counter()
    for _ in range(N):
        os.pwrite(fd, buf, off)
        off += size
        os.fdatasync(fd)
    dt = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return dt / N * 1e6


print(f"{N} appends each, in {DIR}; microseconds per append + fdatasync, 3 runs")
for size in (1000, 2100):
    for layout in ("growing", "fallocate", "padded"):
        runs = " ".join(f"{run(layout, size):6.0f}" for _ in range(3))
        print(f"{size:5d} B  {layout:10s} {runs}")
