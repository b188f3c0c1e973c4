#!/usr/bin/env python3
"""Measures pop3d under the login abuse of issue 10: memory (RSS and PSS)
and a real user's login latency. Starts the given pop3d binary on loopback
over a fresh temporary Maildir (user alice with an {ARGON2ID} hash made by
`pop3d passwd`, user bob with a {PLAIN} secret), then:

  1. waits 1 s and samples memory (baseline);
  2. logs alice in and out LOGINS times, one after the other;
  3. opens FLOOD connections that each send USER for an unknown user and
     a wrong PASS, all at once; once every PASS is sent, bob (PLAIN) and
     then alice (Argon2id) log in, and their PASS -> +OK times are taken;
  4. samples memory 2 s and 10 s after the flood was answered;
  5. with --silent N: opens N connections that never send a byte, then
     bob tries to log in (run it with `-- --max-connections N`).

Memory is the server process's VmRSS and VmHWM (/proc/PID/status) and,
for the process tree, the sum of Pss (/proc/PID/smaps_rollup); a sampler
also records the highest VmRSS it saw every 10 ms.

    abuse_measure.py POP3D [--logins N] [--flood N] [--silent N] [-- EXTRA POP3D ARGS]

pop3d's default --max-connections-per-ip (50) refuses most of a flood from
one address: give `-- --max-connections-per-ip 1000` to measure the hashing.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "correct horse battery"


def kib(path, field):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tree(pid):
    pids = [pid]
    i = 0
    while i < len(pids):
        p = pids[i]
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
        i += 1
    return pids


def memory(pid):
    status = f"/proc/{pid}/status"
    pss = sum(kib(f"/proc/{p}/smaps_rollup", "Pss") or 0 for p in tree(pid))
    return {
        "rss": kib(status, "VmRSS"),
        "hwm": kib(status, "VmHWM"),
        "pss": pss,
        "threads": kib(status, "Threads"),
    }


def fmt(m):
    mb = lambda k: f"{k / 1024:7.1f} MB" if k is not None else "      ?"
    return f"VmRSS {mb(m['rss'])}  VmHWM {mb(m['hwm'])}  PSS(tree) {mb(m['pss'])}  threads {m['threads']}"


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def reset(self):
        self.peak = 0

    def run(self):
        while not self.stop:
            rss = kib(f"/proc/{self.pid}/status", "VmRSS")
            if rss is None:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.01)


def site(binary, root):
    out = subprocess.run(
        [binary, "passwd", "alice"], input=PASSWORD + "\n", capture_output=True, text=True, check=True
    ).stdout
    with open(os.path.join(root, "users"), "w") as f:
        f.write(out + "bob:{PLAIN}bobpw\n")
    for user in ["alice", "bob"]:
        for sub in ["new", "cur", "tmp"]:
            os.makedirs(os.path.join(root, "mail", user, sub))
        with open(os.path.join(root, "mail", user, "new", "1700000000.M1P1.test"), "w") as f:
            f.write("Subject: hi\r\n\r\nhello\r\n")


def start(binary, root, extra):
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--maildir-root", os.path.join(root, "mail"),
         "--users", os.path.join(root, "users")] + extra,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="error"),
    )
    line = server.stdout.readline()
    assert line.startswith("pop3d listening on "), line
    host, port = line.split()[-1].rsplit(":", 1)
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    return server, (host, int(port))


class Conn:
    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=300)
        self.f = self.s.makefile("rb")
        self.greeting = self.f.readline()

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.f.readline()

    def close(self):
        try:
            self.cmd("QUIT")
        except OSError:
            pass
        self.s.close()


def login(addr, user, password):
    """Logs in; returns the PASS -> reply time in ms and the reply."""
    c = Conn(addr)
    assert c.greeting.startswith(b"+OK"), c.greeting
    assert c.cmd(f"USER {user}").startswith(b"+OK")
    t = time.perf_counter()
    reply = c.cmd(f"PASS {password}")
    elapsed = (time.perf_counter() - t) * 1000
    c.close()
    return elapsed, reply


def silent(addr, n):
    conns = []
    for _ in range(n):
        c = Conn(addr)
        conns.append(c)
    greetings = {}
    for c in conns:
        g = c.greeting.strip().decode(errors="replace")
        greetings[g[:40]] = greetings.get(g[:40], 0) + 1
    print(f"{n} silent connections: " + ", ".join(f"{k} x {g}" for g, k in greetings.items()))
    t = time.perf_counter()
    c = Conn(addr)
    g = c.greeting.strip().decode(errors="replace")
    if g.startswith("+OK"):
        c.cmd("USER bob")
        reply = c.cmd("PASS bobpw").strip().decode(errors="replace")
    else:
        reply = "(not admitted)"
    elapsed = (time.perf_counter() - t) * 1000
    print(f"  then bob: greeting {g!r}, PASS {reply!r}, {elapsed:.0f} ms from connect")
    closed = 0
    for s in conns:
        s.s.settimeout(0.2)
        try:
            closed += s.f.read() == b""
        except OSError:
            pass
    print(f"  silent connections closed to make room: {closed}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--logins", type=int, default=10)
    ap.add_argument("--flood", type=int, default=200)
    ap.add_argument("--silent", type=int, default=0)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = ap.parse_args(argv)
    args.extra = extra
    with tempfile.TemporaryDirectory() as root:
        site(args.binary, root)
        server, addr = start(args.binary, root, args.extra)
        sampler = Sampler(server.pid)
        sampler.start()
        try:
            time.sleep(1)
            print(f"baseline                 {fmt(memory(server.pid))}")

            sampler.reset()
            times = []
            for _ in range(args.logins):
                t, reply = login(addr, "alice", PASSWORD)
                assert reply.startswith(b"+OK"), reply
                times.append(t)
            if args.logins:
                m = memory(server.pid)
                print(f"after {args.logins} Argon2id logins {fmt(m)}  peak sampled {sampler.peak / 1024:.1f} MB")
                print(f"  alice login (no flood): median {sorted(times)[len(times) // 2]:.0f} ms, max {max(times):.0f} ms")

            if args.silent:
                silent(addr, args.silent)
            if not args.flood:
                return
            sampler.reset()
            sent = threading.Semaphore(0)
            answered = [0]
            lock = threading.Lock()
            replies = {}

            def attacker(i):
                try:
                    c = Conn(addr)
                    if not c.greeting.startswith(b"+OK"):
                        r = c.greeting.strip()
                        sent.release()  # refused: nothing to send
                    else:
                        c.cmd(f"USER nobody{i}")
                        c.s.sendall(b"PASS certainly-not-the-password\r\n")
                        sent.release()
                        r = c.f.readline().strip()
                    c.s.close()
                except OSError as e:
                    r = repr(e).encode()
                    sent.release()
                with lock:
                    answered[0] += 1
                    replies[r] = replies.get(r, 0) + 1

            started = time.perf_counter()
            threads = [threading.Thread(target=attacker, args=(i,)) for i in range(args.flood)]
            for t in threads:
                t.start()
            for _ in range(args.flood):
                if not sent.acquire(timeout=30):
                    break
            time.sleep(0.1)
            with lock:
                before_bob = answered[0]
            bob, reply = login(addr, "bob", "bobpw")
            assert reply.startswith(b"+OK"), reply
            with lock:
                at_bob = answered[0]
            alice, reply = login(addr, "alice", PASSWORD)
            alice_ok = reply.startswith(b"+OK")
            with lock:
                at_alice = answered[0]
            for t in threads:
                t.join()
            flood_s = time.perf_counter() - started
            print(f"flood of {args.flood} unknown-user PASS: answered in {flood_s:.1f} s, peak sampled {sampler.peak / 1024:.1f} MB")
            print(f"  replies: " + ", ".join(f"{n} x {r.decode(errors='replace')}" for r, n in replies.items()))
            print(f"  bob (PLAIN) login during the flood: {bob:.0f} ms (flood attempts answered before: {before_bob}, by then: {at_bob})")
            print(f"  alice (Argon2id) login during the flood: {alice:.0f} ms, {'ok' if alice_ok else reply.strip().decode()} (answered by then: {at_alice})")
            print(f"  right after            {fmt(memory(server.pid))}")
            time.sleep(2)
            print(f"  2 s after              {fmt(memory(server.pid))}")
            time.sleep(8)
            print(f"  10 s after             {fmt(memory(server.pid))}")
        finally:
            sampler.stop = True
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
