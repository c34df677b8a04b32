"""Scrapes a Prometheus endpoint and prints every sample as one JSON line.

The exposition is parsed by the Prometheus project's own Python parser
(prometheus_client), picked by the Content-Type the server sends, the way a
Prometheus server negotiates it. Any parse error exits non-zero.

    python scrape_metrics.py http://127.0.0.1:9100/metrics
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client import parser as classic


def main() -> int:
    url = sys.argv[1]
    request = urllib.request.Request(
        url,
        headers={"Accept": "application/openmetrics-text; version=1.0.0, text/plain; version=0.0.4"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    if content_type.startswith("application/openmetrics-text"):
        families = openmetrics.text_string_to_metric_families(text)
    else:
        families = classic.text_string_to_metric_families(text)
    for family in families:
        for sample in family.samples:
            print(json.dumps({
                "family": family.name,
                "type": family.type,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
