#!/usr/bin/python3
"""How fast this machine's disk takes durable writes, the way Ferry puts a
segment or a pack: a temp file, the bytes, fsync, rename, fsync of the
directory. It bounds any design that makes the bytes durable twice (the
cache, then the vault), whatever its CPU does (docs/benchmarks.md).

usage: durable-writes.py DIR [--total MIB] [--sizes MIB,MIB,...] [--reps N]
                           [--threads N]

Prints, for each file size and for buffered and O_DIRECT writes, the
median MB/s over the repetitions. With --threads N, N puts are in flight
at once (each its own file; the renames and directory syncs one at a
time), which shows what overlapping puts would gain. The data is random
(incompressible), so that no layer below can shortcut it. DIR must be on
the disk to measure; the files are removed again.
"""
import argparse
import mmap
import os
import statistics
import threading
import time


DIR_LOCK = threading.Lock()


def put(dirfd, name, buf, direct):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if direct:
        flags |= os.O_DIRECT
    tmp = ".tmp-" + name
    fd = os.open(tmp, flags, 0o644, dir_fd=dirfd)
    try:
        os.pwrite(fd, buf, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    with DIR_LOCK:
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        os.fsync(dirfd)


def run(dirfd, size, total, direct, nthreads):
    # An anonymous mapping is page-aligned, as O_DIRECT wants.
    buf = mmap.mmap(-1, size)
    buf.write(os.urandom(size))
    n = max(1, total // size)

    def worker(k):
        for i in range(k, n, nthreads):
            put(dirfd, "f%06d" % i, buf, direct)

    os.sync()
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    for i in range(n):
        os.unlink("f%06d" % i, dir_fd=dirfd)
    os.sync()
    return n * size / dt / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--total", type=int, default=800, help="MiB written per run [800]")
    ap.add_argument("--sizes", default="8,16,64,256", help="file sizes in MiB [8,16,64,256]")
    ap.add_argument("--reps", type=int, default=3, help="runs per figure [3]")
    ap.add_argument("--threads", type=int, default=1, help="puts in flight at once [1]")
    a = ap.parse_args()
    dirfd = os.open(a.dir, os.O_RDONLY | os.O_DIRECTORY)
    print("file MiB\tbuffered MB/s\tO_DIRECT MB/s")
    for s in (int(x) for x in a.sizes.split(",")):
        figs = []
        for direct in (False, True):
            figs.append(statistics.median(
                run(dirfd, s << 20, a.total << 20, direct, max(1, a.threads))
                for _ in range(a.reps)))
        print("%d\t%.0f\t%.0f" % (s, figs[0], figs[1]), flush=True)


if __name__ == "__main__":
    main()
