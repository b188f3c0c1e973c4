"""Drive a POP3 server with Python's standard poplib; print one result per line.

Usage: poplib_check.py HOST PORT USER PASSWORD
The Rust conformance check compares the lines with what the server holds.
"""
import poplib
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def connect():
    return poplib.POP3(host, port, timeout=20)


def body(lines):
    # poplib strips CRLF and one leading dot of dot-stuffed lines.
    return b"".join(line + b"\r\n" for line in lines)


p = connect()
print("CAPA", " ".join(sorted(p.capa())))
p.user(user)
p.pass_(password)
count, size = p.stat()
print("STAT", count, size)
print("LIST", "|".join(x.decode() for x in p.list()[1]))
print("UIDL", "|".join(x.decode() for x in p.uidl()[1]))
for i in range(1, count + 1):
    print("RETR", i, body(p.retr(i)[1]).hex())
print("TOP", body(p.top(1, 0)[1]).hex())
p.dele(1)
p.rset()
count, size = p.stat()
print("RSET", count, size)
p.dele(1)
p.quit()

p = connect()
p.user(user)
p.pass_(password)
count, size = p.stat()
print("AFTER", count, size)
p.quit()

p = connect()
p.apop(user, password)
count, size = p.stat()
print("APOP", count, size)
p.quit()
