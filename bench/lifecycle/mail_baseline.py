"""Helpers of bench/lifecycle/mail-send.

mail_baseline.py send PORT SAMPLE COUNT CONNECTIONS
    The baseline: plain smtplib sending COUNT copies of the SAMPLE message (a file the
    Rust sender delivered, so the same size), each with its own Message-ID, over
    CONNECTIONS connections (one process each). Prints messages/s.
mail_baseline.py count MAILDIR
    Files in the Maildir and distinct Message-IDs among them: `files=N distinct=M`.
mail_baseline.py median V...
    The median of the numbers given.
"""
import email.parser
import multiprocessing
import os
import re
import smtplib
import statistics
import sys
import time


def worker(port, raw, first, count):
    s = smtplib.SMTP("127.0.0.1", port)
    for i in range(first, first + count):
        mid = f"<baseline-{i}@bench.j1msky.test>".encode()
        body = re.sub(rb"(?im)^Message-ID: .*$", b"Message-ID: " + mid, raw, count=1)
        s.sendmail("bench@example.com", [f"owner{i % 1000:06d}@example.com"], body)
    s.quit()


def send(port, sample, count, connections):
    with open(sample, "rb") as f:
        raw = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    share = count // connections
    procs = []
    started = time.perf_counter()
    for c in range(connections):
        n = share if c < connections - 1 else count - share * (connections - 1)
        p = multiprocessing.Process(target=worker, args=(port, raw, c * share, n))
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"a baseline sender failed ({p.exitcode})")
    secs = time.perf_counter() - started
    print(f"messages={count} connections={connections} seconds={secs:.2f} per_second={count / secs:.0f}")


def count(maildir):
    parser = email.parser.BytesHeaderParser()
    files, ids = 0, set()
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        for name in os.listdir(d):
            files += 1
            with open(os.path.join(d, name), "rb") as f:
                ids.add(parser.parse(f)["Message-ID"])
    print(f"files={files} distinct={len(ids)}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "count":
        count(sys.argv[2])
    elif cmd == "median":
        print(statistics.median(float(v) for v in sys.argv[2:]))
