#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Writes the golden segment files from docs/format/segment.md alone, as an
# independent second implementation of the format: if the C code and this
# script disagree, one of them does not follow the spec. Needs the zstd
# command for the compressed sample. Run from this directory; the outputs
# are committed, so this only runs when the format changes.
import hashlib
import os
import struct
import subprocess
import tempfile

NULL = b"\0" * 32


def rec(type_, disk, offset, length, rest=b""):
    return struct.pack("<BHQQ", type_, disk, offset, length) + rest


def disk(index, name, size):
    return rec(1, index, 0, size, bytes([len(name)]) + name.encode())


def data(index, offset, payload):
    return rec(2, index, offset, len(payload), payload)


def zframe(payload):
    # One zstd frame that names its content size (the CLI only writes the
    # size when it knows it, i.e. when compressing a file, not a pipe).
    with tempfile.NamedTemporaryFile() as f:
        f.write(payload)
        f.flush()
        return subprocess.run(["zstd", "-q", "-c", "-1", "--no-check", f.name], check=True,
                              stdout=subprocess.PIPE).stdout


def dataz(index, offset, payload, frame=None, length=None):
    frame = zframe(payload) if frame is None else frame
    return rec(6, index, offset, len(payload) if length is None else length,
               struct.pack("<I", len(frame)) + frame)


def zero(index, offset, length):
    return rec(3, index, offset, length)


def trim(index, offset, length):
    return rec(4, index, offset, length)


def marker(consistency, time_ns, group_round=0):
    return rec(5, 0, group_round, 0, struct.pack("<Bq", consistency, time_ns))


def segment(vm, seq, prev, created, records, compress=False, major=1, minor=0, flags=0,
            count=None):
    plain = b"".join(records)
    stored, comp = plain, 0
    if compress:
        stored = subprocess.run(["zstd", "-q", "-c", "-3"], input=plain, check=True,
                                stdout=subprocess.PIPE).stdout
        comp = 1
    vmb = vm.encode()
    hlen = (90 + len(vmb) + 7) // 8 * 8
    hdr = b"FERRYSEG" + struct.pack("<HHIQ", major, minor, hlen, seq) + prev
    hdr += struct.pack("<qIIQQBB", created, len(records) if count is None else count, flags,
                       len(plain), len(stored), comp, len(vmb)) + vmb
    hdr += b"\0" * (hlen - len(hdr))
    body = hdr + stored
    return body + hashlib.sha256(body).digest() + b"FERRYEND"


def write(path, b):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b)


T0 = 1700000000000000000
basic = segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576),
    data(0, 8192, b"\xa5" * 4096),
    zero(0, 65536, 65536),
    trim(0, 1048576 - 4096, 4096),
    marker(1, T0 + 500000000),
])
write("good/basic.seg", basic)

prev = hashlib.sha256(basic[:-40]).digest()
write("good/zstd-chain.seg", segment("web-1", 2, prev, T0 + 10**9, [
    disk(0, "vda", 1048576),
    disk(1, "vdb", 10 * 1048576 + 512),
    data(1, 10 * 1048576, b"tail" * 1024),
    data(0, 0, bytes(range(256)) * 64),
    marker(2, T0 + 10**9),
], compress=True))

write("good/empty.seg", segment("db.01", 3, b"\x42" * 32, T0, []))

# Format 2.0: a DATAZ record (the frame of 8 KiB of text), a raw DATA
# record beside it, a marker.
write("good/chunked.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576),
    dataz(0, 65536, (b"ferry " * 1366)[:8192]),
    data(0, 73728, bytes(range(256)) * 16),
    marker(1, T0),
], major=2))

# Format 3.0: an ordinary marker, then the VM's cut of round 42 of its
# consistency group (app-consistent), beside 2.0's DATAZ.
write("good/group.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576),
    dataz(0, 65536, (b"ferry " * 1366)[:8192]),
    marker(1, T0),
    data(0, 0, b"\x5a" * 4096),
    marker(2, T0 + 60 * 10**9, 42),
], major=3))

# A longer header from a later minor version: readers skip the extra bytes.
later = bytearray(segment("web-1", 1, NULL, T0, [disk(0, "vda", 4096)], minor=3))
hlen = struct.unpack_from("<I", later, 12)[0]
body = bytes(later[:hlen]) + b"\x77" * 8 + bytes(later[hlen:-40])
body = body[:12] + struct.pack("<I", hlen + 8) + body[16:]
write("good/minor-extension.seg", body + hashlib.sha256(body).digest() + b"FERRYEND")

# Damage. Everything below must fail to parse.
flipped = bytearray(basic)
flipped[200] ^= 0x01
write("corrupt/flipped-byte.seg", bytes(flipped))
write("corrupt/truncated.seg", basic[:-41])
write("corrupt/truncated-header.seg", basic[:50])
write("corrupt/bad-magic.seg", b"FERRYSEX" + basic[8:])
write("corrupt/bad-end-magic.seg", basic[:-1] + b"X")
write("corrupt/empty.seg", b"")
write("corrupt/digest-zeroed.seg", basic[:-40] + NULL + b"FERRYEND")
write("corrupt/future-version.seg", segment("web-1", 1, NULL, T0, [disk(0, "vda", 4096)],
                                            major=4))
# Format 2.0: data compressed per chunk.
text = b"the quick brown fox jumps over the lazy dog. " * 182 + b"\n" * 2
text = (text * 2)[:8192]
write("corrupt/dataz-in-major-1.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), dataz(0, 0, text)]))
write("corrupt/dataz-wrong-length.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), dataz(0, 0, text, length=4096)], major=2))
write("corrupt/dataz-not-smaller.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), dataz(0, 0, text[:4096], frame=zframe(text[:4096]) + b"\0" * 4096)],
    major=2))
write("corrupt/dataz-trailing-bytes.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), dataz(0, 0, text, frame=zframe(text) + b"\1")], major=2))
# Right digest, wrong content.
write("corrupt/misaligned-offset.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), data(0, 512, b"\0" * 4096)]))
write("corrupt/undeclared-disk.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), zero(1, 0, 4096)]))
write("corrupt/unknown-record.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 1048576), rec(9, 0, 0, 4096)]))
write("corrupt/bad-consistency.seg", segment("web-1", 1, NULL, T0, [marker(7, 0)]))
write("corrupt/record-count.seg", segment("web-1", 1, NULL, T0, [disk(0, "vda", 4096)],
                                          count=2))
write("corrupt/past-disk-end.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 8192), trim(0, 8192, 4096)]))
write("corrupt/seq-zero.seg", segment("web-1", 0, NULL, T0, []))
write("corrupt/unknown-flag.seg", segment("web-1", 1, NULL, T0, [], flags=1))
# Bounds: marker times from 2000-01-01 up to 2200-01-01, disks up to 1 PiB.
write("corrupt/marker-time-1999.seg", segment("web-1", 1, NULL, T0, [
    marker(1, 946684800 * 10**9 - 1)]))
write("corrupt/marker-time-2200.seg", segment("web-1", 1, NULL, T0, [
    marker(1, 7258118400 * 10**9)]))
# A group round (MARKER offset) before 3.0, and one past 2^63 - 1.
write("corrupt/group-in-major-1.seg", segment("web-1", 1, NULL, T0, [marker(1, T0, 42)]))
write("corrupt/group-in-major-2.seg", segment("web-1", 1, NULL, T0, [marker(1, T0, 42)],
                                              major=2))
write("corrupt/group-round-2p63.seg", segment("web-1", 1, NULL, T0, [marker(1, T0, 2**63)],
                                              major=3))
write("corrupt/disk-over-1pib.seg", segment("web-1", 1, NULL, T0, [
    disk(0, "vda", 2**50 + 4096)]))
