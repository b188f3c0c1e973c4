"""Python's poplib over TLS: POP3.stls() on the plain port, then POP3_SSL.

Usage: tls.py HOST PORT TLS_PORT USER PASSWORD CAFILE
Prints one line per check; exits non-zero on the first failure.
"""
import poplib
import ssl
import sys

host, port, tls_port, user, password, cafile = sys.argv[1:7]
context = ssl.create_default_context(cafile=cafile)

# STLS (RFC 2595): upgrade, then log in inside TLS.
p = poplib.POP3(host, int(port), timeout=30)
assert "STLS" in p.capa(), p.capa()
p.stls(context)
assert "STLS" not in p.capa(), "STLS still offered inside TLS"
p.user(user)
p.pass_(password)
count, size = p.stat()
body = b"\r\n".join(p.retr(1)[1])
print("stls", count, size, p.sock.version())
assert b"Subject: over TLS" in body, body
p.quit()

# Implicit TLS (RFC 8314).
p = poplib.POP3_SSL(host, int(tls_port), context=context, timeout=30)
assert "STLS" not in p.capa(), p.capa()
p.user(user)
p.pass_(password)
count, size = p.stat()
print("pop3s", count, size, p.sock.version())
body = b"\r\n".join(p.retr(1)[1])
assert b"Subject: over TLS" in body, body
p.quit()
