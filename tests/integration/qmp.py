#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A minimal QMP client for the tests: drives a test's own monitor of qemu or
qemu-storage-daemon (Ferry's agent has a monitor of its own).

  qmp.py SOCKET COMMAND [JSON-ARGUMENTS]   prints the "return" value as JSON
  qmp.py SOCKET --hmp 'COMMAND LINE'       runs a human monitor command, prints its output

Exits 1 with qemu's error on stderr when the command fails."""
import json
import socket
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, command = sys.argv[1], sys.argv[2]
    if command == "--hmp":
        command, args = "human-monitor-command", {"command-line": sys.argv[3]}
    else:
        args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    f = s.makefile("rw")

    def reply():
        while True:
            line = f.readline()
            if not line:
                sys.exit("qmp.py: %s closed the connection" % path)
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    reply()  # the greeting
    for cmd, a in (("qmp_capabilities", None), (command, args)):
        req = {"execute": cmd}
        if a is not None:
            req["arguments"] = a
        f.write(json.dumps(req) + "\n")
        f.flush()
        msg = reply()
        if "error" in msg:
            sys.stderr.write("qmp.py: %s: %s\n" % (cmd, msg["error"].get("desc", msg["error"])))
            sys.exit(1)
    ret = msg.get("return")
    if command == "human-monitor-command":
        sys.stdout.write(ret)
        if "error" in ret.lower() or "failed" in ret.lower():
            sys.exit(1)
    else:
        print(json.dumps(ret))


main()
