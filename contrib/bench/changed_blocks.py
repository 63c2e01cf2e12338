#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Counts the 4 KiB blocks that differ between two images of the same size.

usage: changed_blocks.py A B      (prints one number: the bytes written are N * 4096)
Used by bench.sh as the denominator of "store growth / bytes written".
"""
import sys

BS = 4096
STEP = 1 << 20
n = 0
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    while True:
        x = a.read(STEP)
        y = b.read(STEP)
        if not x and not y:
            break
        if x != y:
            n += sum(1 for i in range(0, max(len(x), len(y)), BS) if x[i:i + BS] != y[i:i + BS])
print(n)
