"""Fetch a whole maildrop with Python's standard poplib.

Usage: fetch_all.py HOST PORT USER PASSWORD OUTDIR
Writes OUTDIR/uidl.txt ("n uid" lines), OUTDIR/list.txt ("n size" lines),
OUTDIR/retr_N (each message as poplib returns it, lines joined with CRLF)
and OUTDIR/top_N (TOP N 0).
"""
import os
import poplib
import sys

host, port, user, password, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
poplib._MAXLINE = 1 << 20  # lines of a 20 MB message may be long
p = poplib.POP3(host, port, timeout=60)
p.user(user)
p.pass_(password)
with open(os.path.join(out, "uidl.txt"), "w") as f:
    for line in p.uidl()[1]:
        f.write(line.decode() + "\n")
with open(os.path.join(out, "list.txt"), "w") as f:
    for line in p.list()[1]:
        f.write(line.decode() + "\n")
count, _ = p.stat()
for i in range(1, count + 1):
    with open(os.path.join(out, "retr_%d" % i), "wb") as f:
        f.write(b"".join(line + b"\r\n" for line in p.retr(i)[1]))
    with open(os.path.join(out, "top_%d" % i), "wb") as f:
        f.write(b"".join(line + b"\r\n" for line in p.top(i, 0)[1]))
p.quit()
