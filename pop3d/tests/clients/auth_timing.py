#!/usr/bin/env python3
"""Times failed PASS checks against a running pop3d, per user (and so per
stored scheme): one fresh loopback connection per sample, USER then a wrong
PASS, the time from sending PASS to its -ERR line. Prints the median, min
and max in milliseconds.

    auth_timing.py HOST PORT SAMPLES USER [USER...]
"""
import socket
import statistics
import sys
import time


def sample(host, port, user):
    with socket.create_connection((host, port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()  # greeting
        s.sendall(f"USER {user}\r\n".encode())
        f.readline()
        start = time.perf_counter()
        s.sendall(b"PASS certainly-not-the-password\r\n")
        line = f.readline()
        elapsed = time.perf_counter() - start
        assert line.startswith(b"-ERR"), line
        s.sendall(b"QUIT\r\n")
        return elapsed * 1000


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    users = sys.argv[4:]
    times = {u: [] for u in users}
    # Interleaved, so that load drifts hit every user alike.
    for _ in range(n):
        for u in users:
            times[u].append(sample(host, port, u))
    for u in users:
        t = times[u]
        print(f"{u:10} median {statistics.median(t):7.2f} ms  min {min(t):7.2f}  max {max(t):7.2f}  (n={len(t)})")


if __name__ == "__main__":
    main()
