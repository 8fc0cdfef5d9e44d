"""Records the seed corpus of the fuzz harness from the real fakes: Stripe events from
`j1msky sim stripe` (a checkout completed, a renewal paid and failed, a refund, a
trial ending, a Portal cancel, a pay-per-task invoice) and streamed answers from
`j1msky sim provider` in both wire formats (short, long, cut at max_tokens).

usage: record_corpus.py J1MSKY_BIN CORPUS_DIR
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def call(base, method, path, params=None, headers=None):
    data = urllib.parse.urlencode(params or {}).encode() if method == "POST" else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    req.add_header("Authorization", "Bearer sk_test_fuzz")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def stripe_events(binary, out):
    port = free_port()
    p = subprocess.Popen([binary, "sim", "stripe", "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port)
        base = f"http://127.0.0.1:{port}"
        prod = call(base, "POST", "/v1/products", {"name": "Pro", "metadata[j1msky_plan]": "pro"})
        price = call(base, "POST", "/v1/prices", {"product": prod["id"], "unit_amount": "29900", "currency": "usd",
                                                  "recurring[interval]": "month", "lookup_key": "j1msky_pro_monthly"})
        cus = call(base, "POST", "/v1/customers", {"email": "fuzz@example.com", "metadata[j1msky_customer]": "cus_fuzz"})
        cs = call(base, "POST", "/v1/checkout/sessions", {
            "mode": "subscription", "customer": cus["id"], "line_items[0][price]": price["id"],
            "line_items[0][quantity]": "1", "success_url": "http://x/ok", "cancel_url": "http://x/no",
            "client_reference_id": "cus_fuzz", "subscription_data[metadata][j1msky_customer]": "cus_fuzz"})
        done = call(base, "POST", f"/_sim/checkout/{cs['id']}/complete")
        sub = done["subscription"]
        call(base, "POST", f"/_sim/subscriptions/{sub}/renew")
        try:
            call(base, "POST", f"/_sim/subscriptions/{sub}/renew", {"fail": "true"})
        except Exception:
            pass
        for flow in ("trial_will_end", "portal_cancel"):  # refused where the state does not allow it
            try:
                call(base, "POST", f"/_sim/subscriptions/{sub}/{flow}")
            except Exception:
                pass
        walk = call(base, "POST", "/v1/customers", {"email": "walk@example.com"})
        call(base, "POST", "/v1/invoiceitems", {"customer": walk["id"], "amount": "150", "currency": "usd",
                                               "description": "Task tsk_1 (standard)", "metadata[j1msky_task]": "tsk_1"})
        call(base, "POST", "/v1/invoices", {"customer": walk["id"], "pending_invoice_items_behavior": "include",
                                           "auto_advance": "true"})
        events = call(base, "GET", "/v1/events?limit=100")["data"]
        for ch in {json.dumps(e) for e in events if e["type"] == "invoice.paid"}:
            charge = json.loads(ch)["data"]["object"].get("charge")
            if charge:
                call(base, "POST", f"/_sim/charges/{charge}/refund", {"amount": "100"})
                break
        events = call(base, "GET", "/v1/events?limit=100")["data"]
        seen = set()
        for e in events:
            name = e["type"]
            n = 1
            while f"{name}.{n}" in seen:
                n += 1
            seen.add(f"{name}.{n}")
            with open(os.path.join(out, f"{name}.{n}.json"), "w") as f:
                json.dump(e, f, indent=1, sort_keys=True)
        return len(events)
    finally:
        p.kill()
        p.wait()


def streams(binary, out_openai, out_anthropic):
    port = free_port()
    p = subprocess.Popen([binary, "sim", "provider", "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port)
        base = f"http://127.0.0.1:{port}"
        n = 0
        for name, max_tokens in [("short", 8), ("full", 200), ("cut", 3)]:
            for kind, path, out in [("openai", "/v1/chat/completions", out_openai),
                                    ("anthropic", "/v1/messages", out_anthropic)]:
                body = {"model": "sim-model", "max_tokens": max_tokens, "stream": True,
                        "messages": [{"role": "user", "content": f"Write the {name} answer"}]}
                if kind == "openai":
                    body["stream_options"] = {"include_usage": True}
                req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json", "Authorization": "Bearer sim",
                                                      "x-api-key": "sim", "anthropic-version": "2023-06-01"})
                with urllib.request.urlopen(req) as r:
                    raw = r.read()
                with open(os.path.join(out, f"{name}.sse"), "wb") as f:
                    f.write(raw)
                n += 1
        return n
    finally:
        p.kill()
        p.wait()


def main():
    binary, corpus = sys.argv[1], sys.argv[2]
    dirs = {k: os.path.join(corpus, k) for k in ("stripe_events", "sse_openai", "sse_anthropic")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    print("stripe events:", stripe_events(binary, dirs["stripe_events"]))
    print("streams:", streams(binary, dirs["sse_openai"], dirs["sse_anthropic"]))


if __name__ == "__main__":
    main()
