#!/usr/bin/env python3
"""GET latency of board pages as a signed-in operator (issue 14 §4: the board ≤ 1 s).

Logs in through the real form (the pre-login CSRF cookie, then POST /login), makes WARMUP
untimed requests, then REQUESTS timed ones per path over one keep-alive connection, each
read to its last byte; a path whose first answer is not 200 is reported and skipped,
and a later non-200 answer stops the run. Prints one line per path:
`board GET <path>: n=… median_ms=… p90_ms=… max_ms=… bytes=…` (p90: nearest rank).

Usage: board_latency.py BASE_URL EMAIL PASSWORD [--requests 25] [--warmup 3] PATH...
"""

import argparse
import http.client
import re
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("email")
    ap.add_argument("password")
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=900)
    cookies = {}

    def request(method, path, body=None, headers=None):
        h = dict(headers or {})
        if cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                value = rest.split(";", 1)[0]
                if value and "Max-Age=0" not in v:
                    cookies[name] = value
                else:
                    cookies.pop(name, None)
        return r.status, data

    status, page = request("GET", "/login")
    if status != 200 or "j1msky_csrf" not in cookies:
        sys.exit(f"GET /login answered {status} without the CSRF cookie")
    form = urllib.parse.urlencode(
        {"email": a.email, "password": a.password, "csrf_token": cookies["j1msky_csrf"]}
    )
    status, page = request(
        "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    if status not in (302, 303) or len(cookies) == 0:
        sys.exit(f"login failed: {status} {page[:300]!r}")

    for path in a.paths:
        status, page = request("GET", path)
        if status != 200:
            # Reported, not fatal: a page that does not exist yet leaves the others measurable.
            print(f"board GET {path}: answered {status}, not measured", flush=True)
            continue
        for _ in range(a.warmup - 1):
            request("GET", path)
        times = []
        size = 0
        for _ in range(a.requests):
            t = time.perf_counter()
            status, page = request("GET", path)
            times.append((time.perf_counter() - t) * 1000)
            if status != 200:
                sys.exit(f"GET {path} answered {status}")
            size = len(page)
        times.sort()
        n = len(times)
        median = times[(n + 1) // 2 - 1] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
        p90 = times[-(-9 * n // 10) - 1]
        tiles = len(re.findall(rb'data-kpi="', page))
        print(
            f"board GET {path}: n={n} median_ms={median:.0f} p90_ms={p90:.0f} max_ms={times[-1]:.0f} "
            f"bytes={size} tiles={tiles}",
            flush=True,
        )


if __name__ == "__main__":
    main()
