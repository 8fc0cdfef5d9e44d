"""A loopback SMTP server for the mail tests and the benchmark: aiosmtpd writing every
accepted message to a Maildir. Recipients starting with `bounce` get a 550 at RCPT.
Prints `ready <port>` once listening; runs until killed. With SMTP_SINK_DELAY_MS set, each
message is stored and then acknowledged that much later (a slow server: the window in
which a sender that dies has handed over a message without learning so).

usage: smtp-sink.py MAILDIR [PORT]
"""
import asyncio
import mailbox
import os
import socket
import sys
import threading

from aiosmtpd.controller import Controller

DELAY = int(os.environ.get("SMTP_SINK_DELAY_MS", "0")) / 1000


class Sink:
    def __init__(self, path):
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        self.box = mailbox.Maildir(path, create=True)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.box.add(envelope.original_content)
        if DELAY:
            await asyncio.sleep(DELAY)
        return "250 OK queued"


def main():
    path = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if port == 0:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    controller = Controller(Sink(path), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"ready {port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
