# SPDX-License-Identifier: LGPL-2.1-or-later
# The check of a test guest's write sequence (tests/fixtures/guest-init.sh,
# ferry.mode=write) in a disk image, for the tests that replicate a guest
# while it writes (qemu-guest.sh, libvirt.sh). Source it after lib.sh; it
# needs e2fsprogs (e2fsck, debugfs, dumpe2fs) and python3, and counts the
# images that needed a journal replay in $replays.
replays=${replays:-0}

# check_seq IMAGE: on a copy of IMAGE, replays the journal, requires a clean
# e2fsck -fn and sets K and C: files 1..K of the sequence present, 1..C of
# them complete (C = K, or K - 1 when file K is cut short), C > 0.
check_seq() {
	local img=$1 out
	rm -rf chk chk.img
	cp --sparse=always "$img" chk.img
	dumpe2fs -h chk.img 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery' && replays=$((replays + 1))
	e2fsck -E journal_only -y chk.img >chk.fsck 2>&1 || { cat chk.fsck >&2; fail "$img: journal replay failed"; }
	e2fsck -fn chk.img >chk.fsck 2>&1 ||
		{ cat chk.fsck >&2; fail "$img: not consistent after its journal was replayed (e2fsck -fn)"; }
	mkdir chk
	debugfs -R "rdump /seq $T/chk" chk.img >chk.debugfs 2>&1
	[ -d chk/seq ] || { cat chk.debugfs >&2; fail "$img: no /seq in the file system"; }
	out=$(python3 - chk/seq <<'PY'
import os, sys
d = sys.argv[1]
names = os.listdir(d)
k = len(names)
if sorted(names, key=lambda s: int(s) if s.isdigit() else -1) != [str(n) for n in range(1, k + 1)]:
    have = set(names)
    gap = next(n for n in range(1, k + 2) if str(n) not in have)
    sys.exit("files are not 1..%d: %d missing (names: %s)" % (k, gap, " ".join(sorted(names)[:10])))
complete = k
for n in range(1, k + 1):
    want = b"%08d\n" % n * (200 + n * 389 % 3000)
    with open(os.path.join(d, str(n)), "rb") as f:
        got = f.read()
    if got == want:
        continue
    if n == k and want.startswith(got):
        complete = k - 1
        continue
    sys.exit("file %d: %d bytes, %s" % (n, len(got),
             "not a prefix of its content" if n == k else "not its content (%d bytes)" % len(want)))
if complete < 1:
    sys.exit("no complete file (%d present)" % k)
print(k, complete)
PY
) || fail "$img: the sequence is broken"
	read -r K C <<<"$out"
}
