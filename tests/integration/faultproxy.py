#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A fault-injecting HTTP/1.1 proxy for the object-store tests.

Sits on loopback between Ferry and an object-store server (Azurite) and, per
request, by a seeded random draw: drops the connection before forwarding the
request (no side effect), drops it after the server answered (the side
effect happened but the client never hears of it: retries must be
idempotent), cuts the response short, answers 503 Server Busy itself, or
stalls for a few seconds before forwarding. Faults are bounded: the same
request (method and path) never fails more than --max-streak times in a
row, so a client with a sane retry budget always gets through. Counts go to
--stats as JSON after every request. Standard library only.

Usage: faultproxy.py --upstream HOST:PORT [--port N] [--port-file F]
       [--seed N] [--drop-before P] [--drop-after P] [--truncate P]
       [--error P] [--stall P] [--stall-seconds S] [--max-streak N]
       [--stats FILE]
"""
import argparse
import json
import os
import random
import socket
import sys
import threading
import time

HEAD_MAX = 64 * 1024


class Closed(Exception):
    pass


def read_head(sock, buf):
    """Reads up to the blank line; returns (head bytes, leftover)."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_MAX:
            raise Closed()
        data = sock.recv(65536)
        if not data:
            raise Closed()
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def headers_of(head):
    lines = head.decode("latin-1").split("\r\n")
    h = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
    return lines[0], h


def read_exact(sock, buf, n):
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            raise Closed()
        buf += data
    return buf[:n], buf[n:]


def read_chunked(sock, buf):
    """Returns the raw chunked body (as sent) and leftover bytes."""
    out = b""
    while True:
        while b"\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise Closed()
            buf += data
        i = buf.index(b"\r\n")
        size = int(buf[:i].split(b";")[0], 16)
        out += buf[:i + 2]
        buf = buf[i + 2:]
        if size == 0:
            # Trailers end with a blank line.
            while True:
                while b"\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        raise Closed()
                    buf += data
                i = buf.index(b"\r\n")
                out += buf[:i + 2]
                line, buf = buf[:i], buf[i + 2:]
                if not line:
                    return out, buf
        chunk, buf = read_exact(sock, buf, size + 2)
        out += chunk


def read_message(sock, buf, is_response=False, method=""):
    """One whole HTTP message: (bytes, leftover, headers dict, first line)."""
    head, buf = read_head(sock, buf)
    first, h = headers_of(head)
    if is_response:
        status = int(first.split()[1])
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return head, buf, h, first
    if h.get("transfer-encoding", "").lower() == "chunked":
        body, buf = read_chunked(sock, buf)
    elif "content-length" in h:
        body, buf = read_exact(sock, buf, int(h["content-length"]))
    elif is_response:
        # Until the server closes.
        body = buf
        while True:
            data = sock.recv(65536)
            if not data:
                break
            body += data
        buf = b""
    else:
        body = b""
    return head + body, buf, h, first


class Proxy:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.mu = threading.Lock()
        self.streak = {}
        self.stats = {"requests": 0, "forwarded": 0, "drop_before": 0, "drop_after": 0,
                      "truncate": 0, "error": 0, "stall": 0}
        host, port = a.upstream.rsplit(":", 1)
        self.upstream = (host, int(port))

    def draw(self, key):
        """The fault for one request, under the streak bound."""
        with self.mu:
            self.stats["requests"] += 1
            x = self.rng.random()
            a = self.a
            fault = None
            for name, p in (("drop_before", a.drop_before), ("drop_after", a.drop_after),
                            ("truncate", a.truncate), ("error", a.error), ("stall", a.stall)):
                if x < p:
                    fault = name
                    break
                x -= p
            failing = fault not in (None, "stall")
            if failing and self.streak.get(key, 0) >= a.max_streak:
                fault = None
                failing = False
            self.streak[key] = self.streak.get(key, 0) + 1 if failing else 0
            self.stats[fault or "forwarded"] += 1
            stall = self.rng.uniform(1.0, a.stall_seconds) if fault == "stall" else 0
            return fault, stall

    def write_stats(self):
        if not self.a.stats:
            return
        with self.mu:
            tmp = self.a.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.stats, f)
            os.replace(tmp, self.a.stats)

    def connect(self):
        s = socket.create_connection(self.upstream)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def serve(self, client):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up, ubuf, cbuf = None, b"", b""
        try:
            while True:
                req, cbuf, _, first = read_message(client, cbuf)
                parts = first.split()
                method = parts[0]
                key = method + " " + parts[1].split("?")[0]
                fault, stall = self.draw(key)
                if fault == "drop_before":
                    return
                if fault == "error":
                    body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy'
                            b'</Code><Message>injected by faultproxy</Message></Error>')
                    client.sendall(b"HTTP/1.1 503 Server Busy\r\nContent-Type: application/xml"
                                   b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    self.write_stats()
                    continue
                if stall:
                    time.sleep(stall)
                for attempt in range(2):
                    try:
                        if up is None:
                            up, ubuf = self.connect(), b""
                        up.sendall(req)
                        resp, ubuf, _, _ = read_message(up, ubuf, True, method)
                        break
                    except (Closed, OSError):
                        # The server closed a kept-alive connection: once more
                        # on a fresh one, as a client would.
                        if up:
                            up.close()
                        up = None
                        if attempt:
                            return
                if fault == "drop_after":
                    return
                if fault == "truncate":
                    client.sendall(resp[:max(1, len(resp) // 2)])
                    return
                client.sendall(resp)
                self.write_stats()
        except (Closed, OSError, ValueError, IndexError):
            return
        finally:
            client.close()
            if up:
                up.close()
            self.write_stats()

    def run(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.a.port))
        ls.listen(64)
        if self.a.port_file:
            with open(self.a.port_file, "w") as f:
                f.write("%d\n" % ls.getsockname()[1])
        while True:
            c, _ = ls.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--drop-before", type=float, default=0.05)
    p.add_argument("--drop-after", type=float, default=0.05)
    p.add_argument("--truncate", type=float, default=0.03)
    p.add_argument("--error", type=float, default=0.07)
    p.add_argument("--stall", type=float, default=0.03)
    p.add_argument("--stall-seconds", type=float, default=3.0)
    p.add_argument("--max-streak", type=int, default=3)
    p.add_argument("--stats")
    Proxy(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
