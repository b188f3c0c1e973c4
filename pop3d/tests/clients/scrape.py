#!/usr/bin/env python3
"""Scrapes pop3d's /metrics and parses it with prometheus_client's real
parsers: the OpenMetrics one (strict: what pop3d serves) and the Prometheus
text one. Prints one line per sample, `name{k="v",...} value`, with labels
sorted, from the OpenMetrics parse, after checking both parsers agree."""

import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus


def samples(families):
    out = {}
    for family in families:
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = float(s.value)
    return out


def main():
    with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
        assert response.status == 200, response.status
        kind = response.headers["Content-Type"]
        assert kind.startswith("application/openmetrics-text"), kind
        text = response.read().decode("utf-8")
    strict = samples(openmetrics(text))
    plain = samples(prometheus(text))
    # The text parser names counter samples with _total too, and has no
    # _created; every sample it sees must be the same in both.
    for name, value in plain.items():
        assert strict.get(name) == value, (name, value, strict.get(name))
    for name, value in sorted(strict.items()):
        print(f"{name} {value}")


main()
