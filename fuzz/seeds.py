#!/usr/bin/env python3
"""Makes the seed corpora in fuzz/seeds/<target>/ from the test transcripts.

The client side of every C:/S: transcript in pop3-proto/tests/*.rs and
every run of h.command("...") calls in one test function becomes one
session seed (also a variant that logs in as the fuzz store's alice first);
every command line becomes a command_line seed. Targets whose input starts
with an operations part get it empty (two zero octets), so the seed is the
client byte stream alone. Inputs that once broke a target are kept beside them as found-<sha1>, and
hand-made structured inputs as hand-<name> (sasl: a SCRAM-SHA-256 login
with the right and with a wrong password, in the operations encoding).
Run from anywhere: python3 fuzz/seeds.py
"""
import base64
import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent
TESTS = ROOT.parent / "pop3-proto" / "tests"
OUT = ROOT / "seeds"

LOGIN = ["USER alice", "PASS wonderland"]
C_LINE = re.compile(r'^\s*"?\s*C:\s?(.*?)(?:\\r)?(?:\\n)?"?\s*[,)]*;?$')
COMMAND = re.compile(r'\.command\(\s*(?:&format!\()?\s*"((?:[^"\\]|\\.)*)"')


def unescape(s):
    """Rust string escapes (\\r, \\n, \\t, \\0, \\\\, \\", \\u{..}) to bytes."""
    s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda m: chr(int(m.group(1), 16)), s)
    simple = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
    s = re.sub(r"\\(.)", lambda m: simple.get(m.group(1), m.group(0)), s)
    return s.encode()


def transcripts():
    for path in sorted(TESTS.glob("*.rs")):
        lines = path.read_text().splitlines()
        block = []
        for line in lines:
            m = C_LINE.match(line)
            if m:
                block.append(unescape(m.group(1)))
            elif block and re.match(r'^\s*"?\s*S:', line):
                continue
            elif block:
                yield block
                block = []
        if block:
            yield block
        # h.command(...) runs, one per test function.
        for body in re.split(r"\n\s*(?:pub\s+)?fn ", path.read_text()):
            run = [unescape(m.group(1)) for m in COMMAND.finditer(body)]
            if run:
                yield run


def bodies():
    yield b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
    yield b"Subject: bare\n\nbare lf body\n.\n\nlast line without end"
    yield b"Subject: cr\r\nX-A: b\r\n\r\nline\r\r\n\r\n.\r\nx\ry\r"
    yield b""
    yield b".\r\n"
    yield b"no headers\n.x\n..y\n"
    yield b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\nb4\r\n"


def proxy_headers():
    """PROXY protocol headers of every kind, each followed by some POP3."""
    sig = b"\r\n\r\n\0\r\nQUIT\n"

    def v2(command, family, block):
        return sig + bytes([0x20 | command, family]) + len(block).to_bytes(2, "big") + block

    inet = bytes([203, 0, 113, 5, 10, 0, 0, 1]) + (56324).to_bytes(2, "big") + (110).to_bytes(2, "big")
    inet6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + (1).to_bytes(2, "big") + (2).to_bytes(2, "big")
    ssl = b"\x20\x00\x0f\x01\x00\x00\x00\x00\x21\x00\x07TLSv1.3"
    yield b"PROXY TCP4 203.0.113.5 10.0.0.1 56324 110\r\n"
    yield b"PROXY TCP6 2001:db8::5 2001:db8::1 65535 995\r\n"
    yield b"PROXY UNKNOWN\r\n"
    yield b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"
    yield v2(0, 0x00, b"")
    yield v2(1, 0x11, inet)
    yield v2(1, 0x11, inet + ssl + b"\x04\x00\x00")
    yield v2(1, 0x21, inet6)
    yield v2(1, 0x31, b"/run/haproxy.sock".ljust(108, b"\0") + bytes(108))
    yield v2(1, 0x12, inet + b"\x03\x00\x04\x00\x00\x00\x00")


def write(target, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    # Inputs the fuzzers found (found-*) and hand-made ones (hand-*) are
    # kept; the rest is remade.
    for f in OUT.rglob("*"):
        if f.is_file() and not f.name.startswith(("found-", "hand-")):
            f.unlink()
    sessions = set()
    lines = set()
    for block in transcripts():
        lines.update(block)
        stream = b"".join(l + b"\r\n" for l in block)
        sessions.add(stream)
        sessions.add(b"".join(l.encode() + b"\r\n" for l in LOGIN) + stream)
    plain = base64.b64encode(b"\0alice\0wonderland")
    sessions.add(b"AUTH PLAIN " + plain + b"\r\nSTAT\r\nQUIT\r\n")
    sessions.add(b"AUTH LOGIN\r\n" + base64.b64encode(b"alice") + b"\r\n"
                 + base64.b64encode(b"wonderland") + b"\r\nLIST\r\nQUIT\r\n")
    sessions.add(b"USER alice\r\nPASS wonderland\r\nRETR 1\r\nRETR 2\r\nTOP 3 1\r\n"
                 b"DELE 1\r\nRSET\r\nDELE 2\r\nUIDL\r\nLIST\r\nQUIT\r\n")
    for stream in sorted(sessions):
        write("session_bytes", stream)
        write("session_chunking", b"\x00\x00" + stream)
        write("session_ops", b"\x00\x00" + stream)
        write("procedure", b"\x00\x00" + stream)
        if b"AUTH" in stream.upper():
            write("sasl", b"\x00\x00" + stream)
    for line in sorted(lines):
        write("command_line", line)
    for header in proxy_headers():
        for piece in (0, 6, 63):
            write("proxy_header", bytes([piece]) + header + b"CAPA\r\n")
    for body in bodies():
        for mode in (0x00, 0x80, 0x81, 0x83):
            write("dot_stuffing", bytes([mode, 0]) + body)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    count = sum(1 for f in OUT.rglob("*") if f.is_file())
    print(f"{count} seed files, {total} octets, in {OUT}")


if __name__ == "__main__":
    main()
