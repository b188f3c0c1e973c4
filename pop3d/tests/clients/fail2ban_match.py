#!/usr/bin/env python3
"""Applies the failregex of a fail2ban filter file to log lines as fail2ban
does: <HOST> expanded to fail2ban's own host pattern (failregex.py:
ipv4, possibly IPv4-mapped; ipv6, possibly bracketed; or a DNS name), the
line's leading timestamp cut off, and the leftmost match taken. Prints the
host of each matching line, one per line, in order.

usage: fail2ban_match.py FILTER.conf LOGFILE"""

import configparser
import re
import sys

IP_4_RE = r"(?:\d{1,3}\.){3}\d{1,3}"
IP_6_RE = r"(?:[0-9a-fA-F]{1,4}::?|:){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
IPV4 = r"(?:::f{4,6}:)?(?P<ip4>%s)" % IP_4_RE
IPV6 = r"(?P<ip6>%s)" % IP_6_RE
DNS = r"(?P<dns>[\w\-.^_]*\w)"
ADDR = r"\[?(?:%s|%s)\]?" % (IPV4, IPV6)
HOST = r"(?:%s|%s)" % (ADDR, DNS)
# fail2ban's default date detection finds ISO 8601 at the line start.
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def main():
    conf = configparser.RawConfigParser()
    conf.read(sys.argv[1])
    regexes = [
        re.compile(line.strip().replace("<HOST>", HOST))
        for line in conf.get("Definition", "failregex").splitlines()
        if line.strip()
    ]
    with open(sys.argv[2], encoding="utf-8") as log:
        for line in log:
            line = DATE.sub("", line.rstrip("\n"), count=1)
            for regex in regexes:
                m = regex.search(line)
                if m:
                    print(m.group("ip4") or m.group("ip6") or m.group("dns"))
                    break


main()
