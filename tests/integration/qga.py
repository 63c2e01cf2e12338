#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A minimal qemu guest agent client for the tests, over the host side of
the guest's org.qemu.guest_agent.0 port (a qemu chardev socket).

  qga.py [--timeout S] SOCKET COMMAND [JSON-ARGUMENTS]   prints the "return" value as JSON

Like Ferry's own client (replicator/lib/qga.c) it resynchronises first: a
0xFF byte, then guest-sync-delimited with a random id, and everything up to
the 0xFF that precedes the answer is dropped (the guest agent serves one
client at a time; a previous client's answers may still come). The timeout
(default 30 s) covers the wait for the socket, which another client may
hold, and the answer. Exits 1 with the guest agent's error on stderr when
the command fails, 2 when no answer came in time."""
import json
import random
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    timeout = 30.0
    if len(args) >= 2 and args[0] == "--timeout":
        timeout = float(args[1])
        args = args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    path, command = args[0], args[1]
    arguments = json.loads(args[2]) if len(args) > 2 else None
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    buf = b""

    def recv():
        nonlocal buf
        left = deadline - time.monotonic()
        if left <= 0:
            sys.stderr.write("qga.py: no answer from the guest agent at %s\n" % path)
            sys.exit(2)
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            sys.stderr.write("qga.py: no answer from the guest agent at %s\n" % path)
            sys.exit(2)
        if not data:
            sys.exit("qga.py: %s closed the connection" % path)
        buf += data

    def message():
        nonlocal buf
        dec = json.JSONDecoder()
        while True:
            text = buf.decode("utf-8", "replace").lstrip()
            if text:
                try:
                    obj, end = dec.raw_decode(text)
                    buf = text[end:].encode()
                    return obj
                except ValueError:
                    pass
            recv()

    sync = random.randrange(1, 1 << 30)
    s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                    "arguments": {"id": sync}}).encode())
    while True:
        while b"\xff" not in buf:
            buf = b""
            recv()
        buf = buf[buf.index(b"\xff") + 1:]
        if message().get("return") == sync:
            break
    req = {"execute": command}
    if arguments is not None:
        req["arguments"] = arguments
    s.sendall(json.dumps(req).encode())
    msg = message()
    if "error" in msg:
        sys.stderr.write("qga.py: %s: %s\n" % (command, msg["error"].get("desc", msg["error"])))
        sys.exit(1)
    print(json.dumps(msg.get("return")))


main()
