/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD reading side of the qemu tracker against two servers. First a
 * scripted NBD server in a child process (fixed newstyle, structured
 * replies, block status only) whose extents for base:allocation and a
 * dirty bitmap are unaligned and of different granularities, then cut
 * short, overlong, duplicated, missing, zero-length or past the export's
 * end: the walk must fold them into the right 4 KiB blocks or refuse with
 * -EPROTO. Then a real qemu-storage-daemon (skipped where it is not
 * installed) over a sparse raw image with data, holes and a partial last
 * block: over its QMP monitor (a few fixed JSON lines, not the project's
 * QMP module) a dirty bitmap of granularity 4096 is added, known bytes and
 * zeros are written through a writable NBD export at 4 KiB-odd places, the
 * bitmap is disabled and the node exported again read-only with it; the
 * walk must report exactly the dirty blocks (ZERO where the file is a hole
 * across the block, DATA elsewhere), SKIP the rest, in maximal runs also
 * when requests end inside blocks, and reads of the DATA runs must return
 * the written bytes. Without a bitmap the walk reports the allocated blocks
 * as DATA and the holes as SKIP. Errors: a missing export, bitmap or
 * socket, a socket nobody listens on, bad ranges, a callback that stops.
 * Large sparse exports, where the number of block-status requests is what
 * a cycle pays for the disk's size: a scripted 64 GiB one, whose requests
 * must be back to back and as long as the protocol allows (4 GiB - 4 KiB,
 * 17 of them), and a 12 GiB image in qemu, written across the end of the
 * first request, which qemu must answer in requests that long.
 */
#include "nbdview.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

#define BS 4096u
static char tmpdir[] = "/tmp/ferry-nbdview-XXXXXX";

static void path_in_tmp(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static int write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Fills a unix socket address; false if path does not fit. */
static bool sun_set(struct sockaddr_un *sa, const char *path)
{
	size_t n = strlen(path);
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	if (n >= sizeof(sa->sun_path))
		return false;
	memcpy(sa->sun_path, path, n + 1);
	return true;
}

static int unix_listen(const char *path)
{
	struct sockaddr_un sa;
	if (!sun_set(&sa, path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa;
	if (!sun_set(&sa, path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- collecting runs ---- */

struct run {
	uint64_t off, len;
	enum nbdview_kind kind;
};

struct runs {
	struct run r[4096];
	size_t n;
	int stop_at; /* return -ECANCELED from this call (1-based), 0: never */
};

static int collect(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata)
{
	struct runs *rs = userdata;
	if (rs->n == ARRAY_SIZE(rs->r))
		return -E2BIG;
	rs->r[rs->n++] = (struct run){ off, len, kind };
	if (rs->stop_at && (int)rs->n == rs->stop_at)
		return -ECANCELED;
	return 0;
}

static const char *kind_name(enum nbdview_kind k)
{
	switch (k) {
	case NBDVIEW_SKIP:
		return "SKIP";
	case NBDVIEW_DATA:
		return "DATA";
	case NBDVIEW_ZERO:
		return "ZERO";
	}
	return "?";
}

/* Checks that the runs tile [start, end) in 4 KiB blocks, each maximal,
 * and writes each block's kind into kinds[] (indexed from block 0). */
static bool runs_tile(const struct runs *rs, uint64_t start, uint64_t end, uint8_t *kinds)
{
	uint64_t pos = start;
	for (size_t i = 0; i < rs->n; i++) {
		const struct run *r = &rs->r[i];
		if (r->off != pos || r->len == 0 || r->off % BS ||
		    ((r->off + r->len) % BS && r->off + r->len != end) ||
		    (i > 0 && rs->r[i - 1].kind == r->kind)) {
			printf("# bad run %zu: %" PRIu64 "+%" PRIu64 " %s (expected at %" PRIu64
			       ")\n",
			       i, r->off, r->len, kind_name(r->kind), pos);
			return false;
		}
		for (uint64_t b = r->off / BS; b < DIV_ROUND_UP(r->off + r->len, BS); b++)
			kinds[b] = (uint8_t)r->kind;
		pos += r->len;
	}
	if (pos != end) {
		printf("# runs end at %" PRIu64 ", not %" PRIu64 "\n", pos, end);
		return false;
	}
	return true;
}

static bool kinds_equal(const uint8_t *got, const uint8_t *want, uint64_t nblocks)
{
	int shown = 0;
	for (uint64_t b = 0; b < nblocks; b++)
		if (got[b] != want[b] && shown++ < 10)
			printf("# block %" PRIu64 ": got %s, want %s\n", b,
			       kind_name((enum nbdview_kind)got[b]),
			       kind_name((enum nbdview_kind)want[b]));
	return shown == 0;
}

/* ---- a scripted NBD server ---- */

#define NBD_OPT_GO 7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_SET_META_CONTEXT 10
#define NBD_REP_ACK 1
#define NBD_REP_INFO 3
#define NBD_REP_META_CONTEXT 4
#define NBD_REP_ERR_UNSUP 0x80000001u
#define NBD_CMD_READ 0
#define NBD_CMD_DISC 2
#define NBD_CMD_BLOCK_STATUS 7
#define FAKE_SIZE 16384u
#define FAKE_EXPORT "fake"
#define FAKE_BITMAP "b0"

enum fake_mode {
	FAKE_EXACT,    /* extents cut at the request */
	FAKE_SHORT,    /* only the first extent of each context */
	FAKE_OVERRUN,  /* the last extent runs on past the request */
	FAKE_PAST_END, /* ... and past the end of the export */
	FAKE_ZERO_LEN, /* a zero-length extent first */
	FAKE_NO_BITMAP,
	FAKE_DUP, /* base:allocation answered twice */
};

struct seg {
	uint64_t end;
	uint32_t flags;
};

/* What a fake server serves: its size and the extents of both contexts. */
struct fake_disk {
	uint64_t size;
	const struct seg *alloc, *bitmap;
	size_t nalloc, nbitmap;
};

/* Unaligned and of different granularities on purpose. Blocks: 0 DATA
 * (dirty bytes 100-199), 1 SKIP (clean), 2 ZERO (one dirty byte, zero
 * throughout), 3 SKIP. Without the bitmap: 0 and 1 DATA, 2 and 3 SKIP. */
static const struct seg fake_alloc[] = { { 5000, 0 }, { FAKE_SIZE, 3 } };
static const struct seg fake_bitmap[] = {
	{ 100, 0 }, { 200, 1 }, { 8192, 0 }, { 8193, 1 }, { FAKE_SIZE, 0 }
};
static const struct fake_disk fake_small = { FAKE_SIZE, fake_alloc, fake_bitmap,
					     ARRAY_SIZE(fake_alloc), ARRAY_SIZE(fake_bitmap) };

static void put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
}
static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}
static void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}
static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}
static uint16_t get_be16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return be16toh(v);
}
static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	uint8_t h[20];
	put_be64(h, 0x3e889045565a9ULL);
	put_be32(h + 8, opt);
	put_be32(h + 12, type);
	put_be32(h + 16, len);
	if (write_all(fd, h, sizeof(h)) < 0)
		return -1;
	return len ? write_all(fd, data, len) : 0;
}

/* Extents of one context of an export of size bytes for [off, off+len),
 * shaped by mode. */
static size_t fake_extents(const struct seg *segs, size_t nsegs, uint64_t size, uint64_t off,
			   uint64_t len, enum fake_mode mode, uint32_t *out)
{
	size_t n = 0;
	uint64_t pos = off, end = off + len;
	if (mode == FAKE_ZERO_LEN) {
		out[n++] = 0;
		out[n++] = 0;
	}
	for (size_t i = 0; i < nsegs && pos < end; i++) {
		if (segs[i].end <= pos)
			continue;
		uint64_t e = segs[i].end;
		bool last = e >= end;
		if (last && mode != FAKE_OVERRUN && mode != FAKE_PAST_END)
			e = end;
		if (last && mode == FAKE_PAST_END)
			e = size + BS;
		out[n++] = (uint32_t)(e - pos);
		out[n++] = segs[i].flags;
		pos = e;
		if (mode == FAKE_SHORT)
			break;
	}
	return n / 2;
}

static int send_status(int fd, uint64_t handle, uint32_t ctx_id, const uint32_t *ext, size_t n,
		       bool done)
{
	uint8_t buf[20 + 4 + 8 * 16];
	put_be32(buf, 0x668e33ef);
	put_be16(buf + 4, done ? 1 : 0);
	put_be16(buf + 6, 5); /* NBD_REPLY_TYPE_BLOCK_STATUS */
	put_be64(buf + 8, handle);
	put_be32(buf + 16, (uint32_t)(4 + 8 * n));
	put_be32(buf + 20, ctx_id);
	for (size_t i = 0; i < 2 * n; i++)
		put_be32(buf + 24 + 4 * i, ext[i]);
	return write_all(fd, buf, 24 + 8 * n);
}

/* Serves disk on fd; writes the offset and length of each block-status
 * request to logfd (unless -1) before it answers. */
static void fake_serve(int fd, enum fake_mode mode, const struct fake_disk *disk, int logfd)
{
	uint8_t g[18];
	memcpy(g, "NBDMAGICIHAVEOPT", 16);
	put_be16(g + 16, 3); /* FIXED_NEWSTYLE | NO_ZEROES */
	uint8_t cflags[4];
	if (write_all(fd, g, sizeof(g)) < 0 || read_all(fd, cflags, 4) < 0)
		return;
	bool bitmap_on = false;
	for (;;) { /* options */
		uint8_t h[16];
		if (read_all(fd, h, 16) < 0)
			return;
		uint32_t opt = get_be32(h + 8), len = get_be32(h + 12);
		if (len > 65536)
			return;
		uint8_t *d = malloc(len + 1);
		if (!d || read_all(fd, d, len) < 0) {
			free(d);
			return;
		}
		int r = 0;
		if (opt == NBD_OPT_STRUCTURED_REPLY) {
			r = opt_reply(fd, opt, NBD_REP_ACK, NULL, 0);
		} else if (opt == NBD_OPT_SET_META_CONTEXT && len >= 8) {
			uint32_t nl = get_be32(d), p = 4 + nl, nq = get_be32(d + p);
			p += 4;
			for (uint32_t q = 0; q < nq && p + 4 <= len && r == 0; q++) {
				uint32_t ql = get_be32(d + p);
				char name[256];
				snprintf(name, sizeof(name), "%.*s", (int)MIN(ql, 255u), d + p + 4);
				p += 4 + ql;
				uint32_t id = strcmp(name, "base:allocation") == 0 ? 1 :
					      strcmp(name, "qemu:dirty-bitmap:" FAKE_BITMAP) == 0 ?
										     2 :
										     0;
				if (id == 0)
					continue;
				bitmap_on |= id == 2;
				uint8_t rep[4 + 256];
				put_be32(rep, id);
				memcpy(rep + 4, name, strlen(name));
				r = opt_reply(fd, opt, NBD_REP_META_CONTEXT, rep,
					      (uint32_t)(4 + strlen(name)));
			}
			if (r == 0)
				r = opt_reply(fd, opt, NBD_REP_ACK, NULL, 0);
		} else if (opt == NBD_OPT_GO) {
			uint8_t info[12];
			put_be16(info, 0); /* NBD_INFO_EXPORT */
			put_be64(info + 2, disk->size);
			put_be16(info + 10, 1 | 2); /* HAS_FLAGS | READ_ONLY */
			r = opt_reply(fd, opt, NBD_REP_INFO, info, sizeof(info));
			if (r == 0)
				r = opt_reply(fd, opt, NBD_REP_ACK, NULL, 0);
			free(d);
			if (r < 0)
				return;
			break;
		} else {
			r = opt_reply(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
		}
		free(d);
		if (r < 0)
			return;
	}
	for (;;) { /* transmission */
		uint8_t q[28];
		if (read_all(fd, q, 28) < 0)
			return;
		uint16_t type = get_be16(q + 6);
		uint64_t handle = get_be64(q + 8), off = get_be64(q + 16);
		uint32_t len = get_be32(q + 24);
		if (type == NBD_CMD_DISC)
			return;
		if (type != NBD_CMD_BLOCK_STATUS) {
			uint8_t rep[16];
			put_be32(rep, 0x67446698);
			put_be32(rep + 4, EINVAL);
			put_be64(rep + 8, handle);
			if (write_all(fd, rep, 16) < 0)
				return;
			continue;
		}
		uint64_t req[2] = { off, len };
		if (logfd >= 0 && write_all(logfd, req, sizeof(req)) < 0)
			return;
		uint32_t ea[32], eb[32];
		size_t na = fake_extents(disk->alloc, disk->nalloc, disk->size, off, len, mode, ea);
		size_t nb =
			fake_extents(disk->bitmap, disk->nbitmap, disk->size, off, len, mode, eb);
		bool with_bitmap = bitmap_on && mode != FAKE_NO_BITMAP;
		if (send_status(fd, handle, 1, ea, na, !with_bitmap && mode != FAKE_DUP) < 0 ||
		    (mode == FAKE_DUP && send_status(fd, handle, 1, ea, na, !with_bitmap) < 0) ||
		    (with_bitmap && send_status(fd, handle, 2, eb, nb, true) < 0))
			return;
	}
}

/* Serves one connection in a child; returns its pid. */
static pid_t fake_start(const char *sock, enum fake_mode mode, const struct fake_disk *disk,
			int logfd)
{
	int lfd = unix_listen(sock);
	if (lfd < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = accept(lfd, NULL, NULL);
		if (fd >= 0)
			fake_serve(fd, mode, disk, logfd);
		_exit(0);
	}
	close(lfd);
	return pid;
}

static void fake_stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}

/* Walks a fake server in mode with a bitmap (or without) and request limit
 * max_req (0: default); returns the walk's result, the block kinds in out. */
static int fake_walk(enum fake_mode mode, const char *bitmap, uint64_t max_req, uint8_t *out)
{
	char sock[256];
	path_in_tmp(sock, sizeof(sock), "fake.sock");
	pid_t pid = fake_start(sock, mode, &fake_small, -1);
	if (pid < 0)
		return -errno;
	struct nbdview *v = NULL;
	int r = nbdview_open(sock, FAKE_EXPORT, bitmap, &v);
	if (r < 0) {
		printf("# open: %s\n", nbdview_last_error(NULL));
		fake_stop(pid);
		return r;
	}
	if (max_req)
		nbdview_set_max_request(v, max_req);
	static struct runs rs;
	rs.n = 0;
	rs.stop_at = 0;
	r = nbdview_extents(v, 0, FAKE_SIZE, collect, &rs);
	if (r < 0)
		printf("#   walk: %s\n", nbdview_last_error(v));
	else if (!runs_tile(&rs, 0, FAKE_SIZE, out))
		r = -EBADMSG;
	nbdview_free(v);
	fake_stop(pid);
	return r;
}

static void test_fake(void)
{
	static const uint8_t want_bitmap[4] = { NBDVIEW_DATA, NBDVIEW_SKIP, NBDVIEW_ZERO,
						NBDVIEW_SKIP };
	static const uint8_t want_alloc[4] = { NBDVIEW_DATA, NBDVIEW_DATA, NBDVIEW_SKIP,
					       NBDVIEW_SKIP };
	static const struct {
		enum fake_mode mode;
		uint64_t max_req;
		const char *what;
	} good[] = {
		{ FAKE_EXACT, 0, "exact extents" },
		{ FAKE_EXACT, 3000, "requests of 3000 bytes, ending inside blocks" },
		{ FAKE_EXACT, 1, "requests of 1 byte" },
		{ FAKE_SHORT, 0, "one extent per reply" },
		{ FAKE_SHORT, 5555, "one extent per reply, requests of 5555" },
		{ FAKE_OVERRUN, 0, "extents past the request" },
		{ FAKE_OVERRUN, 3000, "extents past requests of 3000" },
	};
	uint8_t got[4];
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		memset(got, 0xff, sizeof(got));
		int r = fake_walk(good[i].mode, FAKE_BITMAP, good[i].max_req, got);
		ok(r == 0 && memcmp(got, want_bitmap, 4) == 0,
		   "fake server, bitmap: %s: DATA SKIP ZERO SKIP", good[i].what);
		memset(got, 0xff, sizeof(got));
		r = fake_walk(good[i].mode, NULL, good[i].max_req, got);
		ok(r == 0 && memcmp(got, want_alloc, 4) == 0,
		   "fake server, no bitmap: %s: DATA DATA SKIP SKIP", good[i].what);
	}

	static const struct {
		enum fake_mode mode;
		const char *what;
	} bad[] = {
		{ FAKE_PAST_END, "an extent past the end of the export" },
		{ FAKE_ZERO_LEN, "a zero-length extent" },
		{ FAKE_NO_BITMAP, "no extents for the bitmap" },
		{ FAKE_DUP, "base:allocation answered twice" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = fake_walk(bad[i].mode, FAKE_BITMAP, 0, got);
		ok(r == -EPROTO, "fake server sending %s: -EPROTO (got %d)", bad[i].what, r);
	}

	int r = fake_walk(FAKE_EXACT, "other", 0, got);
	ok(r == -ENOENT, "fake server without the bitmap's context: -ENOENT (got %d)", r);
	ok(strstr(nbdview_last_error(NULL), "'other'") != NULL, "... and the message names it: %s",
	   nbdview_last_error(NULL));
}

/* ---- a large sparse export ---- */

#define GIB (UINT64_C(1) << 30)
#define BIG_SIZE (64 * GIB + 1536) /* the last block is partial */
#define BIG_REQ (4 * GIB - BS)     /* the default request limit */

/* Zeros but for data at the start, at 40 GiB and at the end; dirty: two
 * bytes either side of where the first request ends, one byte at 40 GiB,
 * the last byte. */
static const struct seg big_alloc[] = { { 5000, 0 },
					{ 40 * GIB, 3 },
					{ 40 * GIB + 8192, 0 },
					{ BIG_SIZE - 1536 - BS, 3 },
					{ BIG_SIZE, 0 } };
static const struct seg big_bitmap[] = { { BIG_REQ - 100, 0 }, { BIG_REQ + 100, 1 },
					 { 40 * GIB + 1, 0 },  { 40 * GIB + 2, 1 },
					 { BIG_SIZE - 1, 0 },  { BIG_SIZE, 1 } };
static const struct fake_disk fake_big = { BIG_SIZE, big_alloc, big_bitmap, ARRAY_SIZE(big_alloc),
					   ARRAY_SIZE(big_bitmap) };

static bool runs_equal(const struct runs *rs, const struct run *want, size_t n)
{
	bool same = rs->n == n;
	for (size_t i = 0; i < MAX(rs->n, n); i++) {
		const struct run *g = i < rs->n ? &rs->r[i] : NULL, *w = i < n ? &want[i] : NULL;
		if (g && w && g->off == w->off && g->len == w->len && g->kind == w->kind)
			continue;
		same = false;
		printf("# run %zu: got %" PRIu64 "+%" PRIu64 " %s, want %" PRIu64 "+%" PRIu64
		       " %s\n",
		       i, g ? g->off : 0, g ? g->len : 0, g ? kind_name(g->kind) : "-",
		       w ? w->off : 0, w ? w->len : 0, w ? kind_name(w->kind) : "-");
	}
	return same;
}

/* Reads the requests a fake server logged (until it exited) and checks
 * that they ask for [0, size) back to back in pieces of max_req; returns
 * how many there were, or -1. */
static int requests_check(int fd, uint64_t size, uint64_t max_req)
{
	uint64_t req[2], pos = 0;
	int n = 0;
	ssize_t k;
	while ((k = read(fd, req, sizeof(req))) == (ssize_t)sizeof(req)) {
		if (req[0] != pos || req[1] != MIN(max_req, size - pos)) {
			printf("# request %d: %" PRIu64 "+%" PRIu64 ", want %" PRIu64 "+%" PRIu64
			       "\n",
			       n, req[0], req[1], pos, MIN(max_req, size - pos));
			return -1;
		}
		pos += req[1];
		n++;
	}
	return k == 0 && pos == size ? n : -1;
}

/* Walks fake_big with bitmap (or without) and request limit max_req (0:
 * default), compares the runs with want; returns the number of requests
 * (requests_check), or -1 when anything differs. */
static int big_walk(const char *bitmap, uint64_t max_req, const struct run *want, size_t nwant)
{
	char sock[256];
	path_in_tmp(sock, sizeof(sock), "fake.sock");
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fake_start(sock, FAKE_EXACT, &fake_big, p[1]);
	close(p[1]);
	_cleanup_close_ int log_fd = p[0];
	if (pid < 0)
		return -1;
	struct nbdview *v = NULL;
	int r = nbdview_open(sock, FAKE_EXPORT, bitmap, &v);
	if (r == 0 && max_req)
		r = nbdview_set_max_request(v, max_req);
	static struct runs rs;
	rs.n = 0;
	rs.stop_at = 0;
	if (r == 0)
		r = nbdview_extents(v, 0, BIG_SIZE, collect, &rs);
	if (r < 0)
		printf("# %s\n", nbdview_last_error(v));
	bool same = r == 0 && runs_equal(&rs, want, nwant);
	nbdview_free(v);
	fake_stop(pid);
	int n = requests_check(log_fd, BIG_SIZE, max_req ? max_req : BIG_REQ);
	return same ? n : -1;
}

static void test_fake_big(void)
{
	static const struct run want_bitmap[] = {
		{ 0, BIG_REQ - BS, NBDVIEW_SKIP },
		{ BIG_REQ - BS, 2 * BS, NBDVIEW_ZERO },
		{ BIG_REQ + BS, 40 * GIB - BIG_REQ - BS, NBDVIEW_SKIP },
		{ 40 * GIB, BS, NBDVIEW_DATA },
		{ 40 * GIB + BS, 24 * GIB - BS, NBDVIEW_SKIP },
		{ 64 * GIB, 1536, NBDVIEW_DATA },
	};
	static const struct run want_alloc[] = {
		{ 0, 2 * BS, NBDVIEW_DATA },
		{ 2 * BS, 40 * GIB - 2 * BS, NBDVIEW_SKIP },
		{ 40 * GIB, 2 * BS, NBDVIEW_DATA },
		{ 40 * GIB + 2 * BS, 24 * GIB - 3 * BS, NBDVIEW_SKIP },
		{ 64 * GIB - BS, BS + 1536, NBDVIEW_DATA },
	};
	int n = big_walk(FAKE_BITMAP, 0, want_bitmap, ARRAY_SIZE(want_bitmap));
	ok(n == 17,
	   "64 GiB export, bitmap: the dirty blocks, in 17 requests of at most 4 GiB - "
	   "4 KiB back to back (got %d)",
	   n);
	n = big_walk(NULL, 0, want_alloc, ARRAY_SIZE(want_alloc));
	ok(n == 17, "64 GiB export, no bitmap: the data blocks, in 17 requests (got %d)", n);
	n = big_walk(FAKE_BITMAP, UINT32_MAX, want_bitmap, ARRAY_SIZE(want_bitmap));
	ok(n == 17,
	   "64 GiB export, requests of 2^32 - 1, ending inside blocks: the same runs (got "
	   "%d)",
	   n);
	n = big_walk(FAKE_BITMAP, GIB, want_bitmap, ARRAY_SIZE(want_bitmap));
	ok(n == 65, "64 GiB export, requests of 1 GiB: the same runs in 65 requests (got %d)", n);

	char sock[256];
	path_in_tmp(sock, sizeof(sock), "fake.sock");
	pid_t pid = fake_start(sock, FAKE_EXACT, &fake_small, -1);
	struct nbdview *v = NULL;
	int r = pid > 0 ? nbdview_open(sock, FAKE_EXPORT, NULL, &v) : -ECHILD;
	ok_r(r, "open a fake export %s", r < 0 ? nbdview_last_error(NULL) : "");
	if (r == 0) {
		ok(nbdview_set_max_request(v, 0) == -EINVAL &&
			   nbdview_set_max_request(v, UINT64_C(1) << 32) == -EINVAL &&
			   nbdview_set_max_request(v, UINT32_MAX) == 0 &&
			   nbdview_set_max_request(v, 1) == 0,
		   "request limits: 1 to 2^32 - 1");
		nbdview_free(v);
	}
	fake_stop(pid);
}

/* ---- qemu-storage-daemon ---- */

#define IMG_SIZE (UINT64_C(4) * 1024 * 1024 + 1536) /* the last block is partial */
#define NBLOCKS DIV_ROUND_UP(IMG_SIZE, BS)
#define BITMAP "ferry-test"

static uint8_t *mirror; /* what the image holds */
static bool dirty[NBLOCKS];
static pid_t qsd_pid = -1;
static int qmp_fd = -1;
static char img_path[256], nbd_path[256], qmp_path[256], log_path[256];

static uint8_t pattern(uint64_t off, unsigned seed)
{
	return (uint8_t)(((off >> 2) * 31 + seed * 101) % 255 + 1);
}

static void fill(uint8_t *buf, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern(off + i, seed);
}

static char *which(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	_cleanup_free_ char *copy = strdup(path);
	for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		char *p;
		if (asprintf(&p, "%s/%s", dir, prog) < 0)
			return NULL;
		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

/* Reads one line (without the newline) from the QMP socket. */
static int qmp_line(char *buf, size_t n)
{
	size_t i = 0;
	for (;;) {
		struct pollfd p = { .fd = qmp_fd, .events = POLLIN };
		if (poll(&p, 1, 30000) <= 0)
			return -ETIMEDOUT;
		char c;
		if (read(qmp_fd, &c, 1) != 1)
			return -EIO;
		if (c == '\n')
			break;
		if (i + 1 < n)
			buf[i++] = c;
	}
	buf[i] = '\0';
	return 0;
}

/* Sends one command; 0 on "return", -EREMOTEIO on "error" (reply in buf). */
static int qmp(const char *json, char *reply, size_t n)
{
	if (write_all(qmp_fd, json, strlen(json)) < 0 || write_all(qmp_fd, "\n", 1) < 0)
		return -EIO;
	for (;;) {
		int r = qmp_line(reply, n);
		if (r < 0)
			return r;
		if (strstr(reply, "\"return\""))
			return 0;
		if (strstr(reply, "\"error\""))
			return -EREMOTEIO;
		/* an event: read on */
	}
}

static void show_log(void)
{
	_cleanup_fclose_ FILE *f = fopen(log_path, "re");
	char line[512];
	while (f && fgets(line, sizeof(line), f))
		printf("# qsd: %s", line);
}

static int qsd_start(const char *qsd)
{
	char chardev[400], blk_file[400], nbd_server[400];
	snprintf(chardev, sizeof(chardev), "socket,id=mon0,path=%s,server=on,wait=off", qmp_path);
	/* discard=unmap: write zeroes punch holes, as they would in a thin disk. */
	snprintf(blk_file, sizeof(blk_file),
		 "driver=file,node-name=file0,discard=unmap,filename=%s", img_path);
	snprintf(nbd_server, sizeof(nbd_server), "addr.type=unix,addr.path=%s", nbd_path);
	char *argv[] = { (char *)qsd,
			 "--chardev",
			 chardev,
			 "--monitor",
			 "chardev=mon0",
			 "--blockdev",
			 blk_file,
			 "--blockdev",
			 "driver=raw,node-name=disk0,discard=unmap,file=file0",
			 "--nbd-server",
			 nbd_server,
			 "--export",
			 "type=nbd,id=rw0,node-name=disk0,name=rw,writable=on",
			 NULL };
	qsd_pid = fork();
	if (qsd_pid < 0)
		return -errno;
	if (qsd_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(qsd, argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) { /* up to 10 s */
		qmp_fd = unix_connect(qmp_path);
		if (qmp_fd >= 0)
			break;
		if (waitpid(qsd_pid, NULL, WNOHANG) == qsd_pid) {
			qsd_pid = -1;
			return -ECHILD;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	}
	if (qmp_fd < 0)
		return -ETIMEDOUT;
	char reply[4096];
	int r = qmp_line(reply, sizeof(reply)); /* the greeting */
	if (r < 0)
		return r;
	return qmp("{\"execute\": \"qmp_capabilities\"}", reply, sizeof(reply));
}

static void qsd_stop(void)
{
	char reply[1024];
	if (qmp_fd >= 0) {
		qmp("{\"execute\": \"quit\"}", reply, sizeof(reply));
		close(qmp_fd);
		qmp_fd = -1;
	}
	if (qsd_pid > 0) {
		for (int i = 0; i < 500; i++) { /* up to 5 s */
			if (waitpid(qsd_pid, NULL, WNOHANG) == qsd_pid) {
				qsd_pid = -1;
				return;
			}
			nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
		}
		kill(qsd_pid, SIGKILL);
		waitpid(qsd_pid, NULL, 0);
		qsd_pid = -1;
	}
}

/* The initial image: data, holes, a partial block. */
static int make_image(void)
{
	static const struct {
		uint64_t off, len;
	} data[] = {
		{ 0, 8192 },
		{ 128 * 1024, 16384 },
		{ 1024 * 1024, 65536 },
		{ 200 * 1024 + 100, 1000 },
		{ 2 * 1024 * 1024 + 3 * BS, BS },
	};
	_cleanup_close_ int fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)IMG_SIZE) < 0)
		return -errno;
	for (size_t i = 0; i < ARRAY_SIZE(data); i++) {
		fill(mirror + data[i].off, data[i].off, data[i].len, 7);
		if (pwrite(fd, mirror + data[i].off, data[i].len, (off_t)data[i].off) !=
		    (ssize_t)data[i].len)
			return -EIO;
	}
	return 0;
}

static void mark_dirty(uint64_t off, uint64_t len)
{
	for (uint64_t b = off / BS; b < DIV_ROUND_UP(off + len, BS); b++)
		dirty[b] = true;
}

/* The test's writes through the writable export, with the bitmap on. */
static int write_through_nbd(void)
{
	static const struct {
		uint64_t off, len;
		int how; /* 0 write a pattern, 1 write zero bytes, 2 nbd_zero */
	} w[] = {
		{ 2 * BS, BS, 0 },                  /* block 2 */
		{ 10 * BS + 1000, 100, 0 },         /* inside block 10, a hole before */
		{ 15 * BS + 3000, 5000, 0 },        /* across blocks 15 and 16 */
		{ 20 * BS, 3 * BS, 0 },             /* blocks 20-22 */
		{ 32 * BS, 2 * BS, 2 },             /* punches blocks 32-33 (were data) */
		{ 40 * BS, BS + 2048, 2 },          /* block 40 and half of 41, a hole */
		{ IMG_SIZE - 512, 512, 0 },         /* the partial last block */
		{ 34 * BS, BS, 1 },                 /* zero bytes written: allocated */
		{ 35 * BS, 2048, 2 },               /* half of an allocated block */
		{ 1024 * 1024 + BS, BS, 0 },        /* inside old data */
		{ 3 * 1024 * 1024, 256 * 1024, 0 }, /* a long run */
	};
	char uri[300];
	snprintf(uri, sizeof(uri), "nbd+unix:///rw?socket=%s", nbd_path);
	struct nbd_handle *h = nbd_create();
	if (!h)
		return -ENOMEM;
	int r = nbd_connect_uri(h, uri);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(w); i++) {
		uint8_t *m = mirror + w[i].off;
		if (w[i].how == 0)
			fill(m, w[i].off, w[i].len, 40 + (unsigned)i);
		else
			memset(m, 0, w[i].len);
		if (w[i].how == 2)
			r = nbd_zero(h, w[i].len, w[i].off, 0);
		else
			r = nbd_pwrite(h, m, w[i].len, w[i].off, 0);
		mark_dirty(w[i].off, w[i].len);
	}
	if (r < 0)
		printf("# nbd: %s\n", nbd_get_error());
	nbd_shutdown(h, 0);
	nbd_close(h);
	return r < 0 ? -EIO : 0;
}

/* Whether the image file has no data in [start, end): what qemu's raw
 * driver reports as a hole reading zeros. */
static bool file_hole(int fd, uint64_t start, uint64_t end)
{
	off_t d = lseek(fd, (off_t)start, SEEK_DATA);
	return (d < 0 && errno == ENXIO) || (d >= 0 && (uint64_t)d >= end);
}

static void expected_kinds(uint8_t *with_bitmap, uint8_t *without)
{
	_cleanup_close_ int fd = open(img_path, O_RDONLY | O_CLOEXEC);
	for (uint64_t b = 0; b < NBLOCKS; b++) {
		bool hole = fd >= 0 && file_hole(fd, b * BS, MIN((b + 1) * BS, IMG_SIZE));
		with_bitmap[b] = !dirty[b] ? NBDVIEW_SKIP : hole ? NBDVIEW_ZERO : NBDVIEW_DATA;
		without[b] = hole ? NBDVIEW_SKIP : NBDVIEW_DATA;
	}
}

/* Reads every DATA run (in 1 MiB pieces) and checks it against the mirror;
 * checks that the mirror holds zeros where the walk says ZERO (or, without
 * a bitmap, SKIP). */
static bool runs_read_back(struct nbdview *v, const struct runs *rs, bool bitmap)
{
	static uint8_t buf[1u << 20];
	for (size_t i = 0; i < rs->n; i++) {
		const struct run *r = &rs->r[i];
		bool zeros = r->kind == NBDVIEW_ZERO || (!bitmap && r->kind == NBDVIEW_SKIP);
		for (uint64_t o = r->off; o < r->off + r->len; o += sizeof(buf)) {
			size_t n = (size_t)MIN(sizeof(buf), r->off + r->len - o);
			if (zeros) {
				for (size_t k = 0; k < n; k++)
					if (mirror[o + k]) {
						printf("# %s run at %" PRIu64
						       " not zero at %" PRIu64 "\n",
						       kind_name(r->kind), r->off, o + k);
						return false;
					}
				continue;
			}
			if (r->kind != NBDVIEW_DATA)
				continue;
			int k = nbdview_read(v, buf, n, o);
			if (k < 0) {
				printf("# read: %s\n", nbdview_last_error(v));
				return false;
			}
			if (memcmp(buf, mirror + o, n) != 0) {
				printf("# DATA at %" PRIu64 "+%zu differs\n", o, n);
				return false;
			}
		}
	}
	return true;
}

/* The raw extents qemu sends for both contexts, as TAP comments, and
 * whether the bitmap's are on 4 KiB boundaries. */
struct raw_dump {
	bool aligned;
	int lines;
};

static int dump_cb(void *userdata, const char *context, uint64_t offset, uint32_t *e, size_t n,
		   int *error)
{
	struct raw_dump *d = userdata;
	for (size_t i = 0; i + 1 < n; i += 2) {
		bool bm = strncmp(context, "qemu:dirty-bitmap:", 18) == 0;
		if (bm && offset % BS)
			d->aligned = false;
		if (d->lines++ < 24)
			printf("#   %-30s %8" PRIu64 " +%8u flags %u\n", context, offset, e[i],
			       e[i + 1]);
		offset += e[i];
		if (bm && offset % BS && offset != IMG_SIZE)
			d->aligned = false;
	}
	return 0;
}

/* ---- qemu, a large sparse disk ---- */

#define QBIG_SIZE (12 * GIB + 1536)
#define QBIG_BLOCKS DIV_ROUND_UP(QBIG_SIZE, BS)

struct qbig_write {
	uint64_t off, len;
	bool zero; /* nbd_zero, else a pattern */
};

/* Around where the first default request ends, beyond 8 GiB, zeros into
 * old data at 6 GiB, the partial last block. */
static const struct qbig_write qbig_writes[] = {
	{ BIG_REQ - 100, 200, false },      { 8 * GIB + 5, 10, false },
	{ 6 * GIB + 2 * BS, 2 * BS, true }, { 6 * GIB + 8 * BS + 100, 5000, false },
	{ QBIG_SIZE - 512, 512, false },
};

/* Blocks that hold data in the file (SEEK_DATA / SEEK_HOLE), into is_data. */
static bool file_data_map(const char *path, uint64_t size, uint8_t *is_data)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	for (off_t pos = 0;;) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0)
			return errno == ENXIO;
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return false;
		for (uint64_t b = (uint64_t)d / BS; b < DIV_ROUND_UP(MIN((uint64_t)h, size), BS);
		     b++)
			is_data[b] = 1;
		pos = h;
	}
}

/* The image, old data in it, a node, a bitmap and a writable export for it
 * in the running daemon, the writes, then a read-only export "bro" with the
 * disabled bitmap. */
static int qbig_setup(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	static uint8_t buf[65536];
	fill(buf, 0, sizeof(buf), 9);
	if (fd < 0 || ftruncate(fd, (off_t)QBIG_SIZE) < 0 || pwrite(fd, buf, 8192, 0) != 8192 ||
	    pwrite(fd, buf, sizeof(buf), (off_t)(6 * GIB)) != (ssize_t)sizeof(buf))
		return -EIO;
	char cmd[1024], reply[4096];
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"file\", "
		 "\"node-name\": \"file1\", \"filename\": \"%s\", \"discard\": \"unmap\"}}",
		 path);
	static const char *const cmds[] = {
		"{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", \"node-name\": "
		"\"disk1\", \"file\": \"file1\", \"discard\": \"unmap\"}}",
		"{\"execute\": \"block-dirty-bitmap-add\", \"arguments\": {\"node\": \"disk1\", "
		"\"name\": \"" BITMAP "\", \"granularity\": 4096}}",
		"{\"execute\": \"block-export-add\", \"arguments\": {\"type\": \"nbd\", \"id\": "
		"\"brw\", \"node-name\": \"disk1\", \"name\": \"brw\", \"writable\": true}}",
	};
	int r = qmp(cmd, reply, sizeof(reply));
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(cmds); i++)
		r = qmp(cmds[i], reply, sizeof(reply));
	if (r < 0) {
		printf("# qmp: %s\n", reply);
		return r;
	}

	char uri[300];
	snprintf(uri, sizeof(uri), "nbd+unix:///brw?socket=%s", nbd_path);
	struct nbd_handle *h = nbd_create();
	if (!h)
		return -ENOMEM;
	r = nbd_connect_uri(h, uri);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(qbig_writes); i++) {
		const struct qbig_write *w = &qbig_writes[i];
		fill(buf, w->off, w->len, 50 + (unsigned)i);
		r = w->zero ? nbd_zero(h, w->len, w->off, 0) :
			      nbd_pwrite(h, buf, w->len, w->off, 0);
	}
	if (r < 0)
		printf("# nbd: %s\n", nbd_get_error());
	nbd_shutdown(h, 0);
	nbd_close(h);
	if (r < 0)
		return -EIO;
	r = qmp("{\"execute\": \"block-dirty-bitmap-disable\", \"arguments\": {\"node\": "
		"\"disk1\", \"name\": \"" BITMAP "\"}}",
		reply, sizeof(reply));
	if (r == 0)
		r = qmp("{\"execute\": \"block-export-add\", \"arguments\": {\"type\": \"nbd\", "
			"\"id\": \"bro\", \"node-name\": \"disk1\", \"name\": \"bro\", \"writable\": "
			"false, \"bitmaps\": [\"" BITMAP "\"]}}",
			reply, sizeof(reply));
	if (r < 0)
		printf("# qmp: %s\n", reply);
	return r;
}

/* Walks the export "bro" with or without the bitmap in default requests;
 * compares every block's kind with want. */
static bool qbig_walk(const char *bitmap, const uint8_t *want, uint8_t *got, size_t *nruns)
{
	struct nbdview *v = NULL;
	int r = nbdview_open(nbd_path, "bro", bitmap, &v);
	static struct runs rs;
	rs.n = 0;
	rs.stop_at = 0;
	if (r == 0)
		r = nbdview_extents(v, 0, QBIG_SIZE, collect, &rs);
	if (r < 0)
		printf("# %s\n", nbdview_last_error(v));
	memset(got, 0xff, QBIG_BLOCKS);
	bool same = r == 0 && runs_tile(&rs, 0, QBIG_SIZE, got) &&
		    kinds_equal(got, want, QBIG_BLOCKS);
	/* The bytes written across the end of the first request read back. */
	uint8_t buf[200], want_buf[200];
	fill(want_buf, BIG_REQ - 100, sizeof(want_buf), 50);
	if (same && (nbdview_read(v, buf, sizeof(buf), BIG_REQ - 100) < 0 ||
		     memcmp(buf, want_buf, sizeof(buf)) != 0)) {
		printf("# read across %" PRIu64 " differs\n", (uint64_t)BIG_REQ);
		same = false;
	}
	*nruns = rs.n;
	nbdview_free(v);
	return same;
}

/* The default requests against qemu itself: a 12 GiB sparse disk, written
 * across the end of the first request and beyond 8 GiB. */
static void test_qemu_big(void)
{
	char path[256];
	path_in_tmp(path, sizeof(path), "big.img");
	int r = qbig_setup(path);
	ok_r(r, "12 GiB sparse disk in the daemon, bitmap, writes, read-only export");
	_cleanup_free_ uint8_t *is_data = calloc(1, QBIG_BLOCKS);
	_cleanup_free_ uint8_t *want_bm = calloc(1, QBIG_BLOCKS);
	_cleanup_free_ uint8_t *want_alloc = calloc(1, QBIG_BLOCKS);
	_cleanup_free_ uint8_t *got = calloc(1, QBIG_BLOCKS);
	if (r < 0 || !is_data || !want_bm || !want_alloc || !got) {
		unlink(path);
		return;
	}
	ok(file_data_map(path, QBIG_SIZE, is_data), "the image's data map");
	for (uint64_t b = 0; b < QBIG_BLOCKS; b++)
		want_alloc[b] = is_data[b] ? NBDVIEW_DATA : NBDVIEW_SKIP;
	for (size_t i = 0; i < ARRAY_SIZE(qbig_writes); i++) {
		const struct qbig_write *w = &qbig_writes[i];
		for (uint64_t b = w->off / BS; b < DIV_ROUND_UP(w->off + w->len, BS); b++)
			want_bm[b] = is_data[b] ? NBDVIEW_DATA : NBDVIEW_ZERO;
	}
	ok(want_bm[(6 * GIB) / BS + 2] == NBDVIEW_ZERO && want_bm[BIG_REQ / BS] == NBDVIEW_DATA,
	   "the zeroed blocks are holes, the written ones data");
	size_t n;
	ok(qbig_walk(BITMAP, want_bm, got, &n),
	   "12 GiB, bitmap, requests of 4 GiB - 4 KiB: exactly the dirty blocks (%zu runs)", n);
	ok(qbig_walk(NULL, want_alloc, got, &n),
	   "12 GiB, no bitmap, requests of 4 GiB - 4 KiB: the data blocks (%zu runs)", n);
	unlink(path);
}

static void test_qemu(const char *qsd)
{
	path_in_tmp(img_path, sizeof(img_path), "disk.img");
	path_in_tmp(nbd_path, sizeof(nbd_path), "nbd.sock");
	path_in_tmp(qmp_path, sizeof(qmp_path), "qmp.sock");
	path_in_tmp(log_path, sizeof(log_path), "qsd.log");
	mirror = calloc(1, IMG_SIZE);
	ok(mirror && make_image() == 0, "sparse image with data, holes, partial last block");

	int r = qsd_start(qsd);
	ok_r(r, "qemu-storage-daemon started, QMP answers");
	if (r < 0) {
		show_log();
		qsd_stop();
		return;
	}
	char reply[4096];
	r = qmp("{\"execute\": \"block-dirty-bitmap-add\", \"arguments\": {\"node\": \"disk0\", "
		"\"name\": \"" BITMAP "\", \"granularity\": 4096}}",
		reply, sizeof(reply));
	ok_r(r, "block-dirty-bitmap-add, granularity 4096 %s", r < 0 ? reply : "");
	ok_r(write_through_nbd(), "writes and zeros through the writable export");

	static const char export_ro[] =
		"{\"execute\": \"block-export-add\", \"arguments\": {\"type\": \"nbd\", \"id\": "
		"\"ro0\", \"node-name\": \"disk0\", \"name\": \"ro\", \"writable\": false, "
		"\"bitmaps\": [\"" BITMAP "\"]}}";
	r = qmp(export_ro, reply, sizeof(reply));
	ok(r == -EREMOTEIO && strstr(reply, "incompatible"),
	   "qemu refuses a read-only export of an enabled bitmap on a writable node");
	r = qmp("{\"execute\": \"block-dirty-bitmap-disable\", \"arguments\": {\"node\": "
		"\"disk0\", \"name\": \"" BITMAP "\"}}",
		reply, sizeof(reply));
	ok_r(r, "block-dirty-bitmap-disable %s", r < 0 ? reply : "");
	r = qmp(export_ro, reply, sizeof(reply));
	ok_r(r, "block-export-add of the node, read-only, bitmaps [\"" BITMAP "\"] %s",
	     r < 0 ? reply : "");

	static uint8_t want_bm[NBLOCKS], want_alloc[NBLOCKS], got[NBLOCKS];
	expected_kinds(want_bm, want_alloc);
	ok(want_bm[32] == NBDVIEW_ZERO && want_bm[33] == NBDVIEW_ZERO &&
		   want_bm[40] == NBDVIEW_ZERO && want_bm[41] == NBDVIEW_ZERO,
	   "the zeroed blocks are holes in the file");

	/* What qemu actually sends, for the record. */
	{
		char uri[300];
		snprintf(uri, sizeof(uri), "nbd+unix:///ro?socket=%s", nbd_path);
		struct nbd_handle *h = nbd_create();
		nbd_add_meta_context(h, "base:allocation");
		nbd_add_meta_context(h, "qemu:dirty-bitmap:" BITMAP);
		struct raw_dump d = { .aligned = true };
		r = nbd_connect_uri(h, uri);
		if (r == 0)
			r = nbd_block_status(
				h, IMG_SIZE, 0,
				(nbd_extent_callback){ .callback = dump_cb, .user_data = &d }, 0);
		ok(r == 0 && d.aligned, "qemu's bitmap extents lie on 4 KiB boundaries");
		nbd_shutdown(h, 0);
		nbd_close(h);
	}

	struct nbdview *v = NULL;
	r = nbdview_open(nbd_path, "ro", BITMAP, &v);
	ok_r(r, "open the read-only export with the bitmap %s", nbdview_last_error(NULL));
	if (r < 0) {
		show_log();
		qsd_stop();
		return;
	}
	ok(nbdview_size(v) == IMG_SIZE, "size %" PRIu64, nbdview_size(v));

	static struct runs rs, rs2;
	static const uint64_t limits[] = { 0, 6000, 3 * BS, 65536 + 17 };
	for (size_t i = 0; i < ARRAY_SIZE(limits); i++) {
		if (limits[i])
			nbdview_set_max_request(v, limits[i]);
		struct runs *cur = i == 0 ? &rs : &rs2;
		cur->n = 0;
		memset(got, 0xff, sizeof(got));
		r = nbdview_extents(v, 0, IMG_SIZE, collect, cur);
		if (r < 0)
			printf("# %s\n", nbdview_last_error(v));
		bool tiled = r == 0 && runs_tile(cur, 0, IMG_SIZE, got);
		ok(tiled && kinds_equal(got, want_bm, NBLOCKS),
		   "bitmap walk, requests of %" PRIu64 ": exactly the dirty blocks (%zu runs)",
		   limits[i] ? limits[i] : (uint64_t)4 * 1024 * 1024 * 1024 - BS, cur->n);
		if (i > 0)
			ok(rs2.n == rs.n && memcmp(rs2.r, rs.r, rs.n * sizeof(rs.r[0])) == 0,
			   "... the same maximal runs");
	}
	ok(got[2] == NBDVIEW_DATA && got[10] == NBDVIEW_DATA && got[15] == NBDVIEW_DATA &&
		   got[16] == NBDVIEW_DATA && got[0] == NBDVIEW_SKIP && got[11] == NBDVIEW_SKIP &&
		   got[NBLOCKS - 1] == NBDVIEW_DATA && got[34] == NBDVIEW_DATA,
	   "spot checks: written blocks DATA, old data and holes SKIP, partial last block DATA");
	ok(runs_read_back(v, &rs, true), "DATA runs read back the written bytes");

	/* A part of the disk, and its end. */
	rs2.n = 0;
	r = nbdview_extents(v, 8 * BS, 24 * BS, collect, &rs2);
	memset(got, 0xff, sizeof(got));
	ok(r == 0 && runs_tile(&rs2, 8 * BS, 32 * BS, got) && kinds_equal(got + 8, want_bm + 8, 24),
	   "walk of blocks 8-31");
	rs2.n = 0;
	r = nbdview_extents(v, (NBLOCKS - 2) * BS, IMG_SIZE - (NBLOCKS - 2) * BS, collect, &rs2);
	ok(r == 0 && rs2.n == 2 && rs2.r[1].off + rs2.r[1].len == IMG_SIZE &&
		   rs2.r[1].kind == NBDVIEW_DATA && rs2.r[1].len == 1536,
	   "walk of the last two blocks ends at the size");

	/* Bad ranges, a stopping callback. */
	rs2.n = 0;
	ok(nbdview_extents(v, 100, BS, collect, &rs2) == -EINVAL, "unaligned offset: -EINVAL");
	ok(nbdview_extents(v, 0, BS + 1, collect, &rs2) == -EINVAL, "unaligned end: -EINVAL");
	ok(nbdview_extents(v, 0, IMG_SIZE + 1, collect, &rs2) == -EINVAL, "past the end: -EINVAL");
	ok(nbdview_extents(v, UINT64_MAX - BS + 1, BS, collect, &rs2) == -EINVAL,
	   "overflowing range: -EINVAL");
	ok(nbdview_extents(v, BS, 0, collect, &rs2) == 0 && rs2.n == 0, "empty walk: no runs");
	rs2.stop_at = 2;
	ok(nbdview_extents(v, 0, IMG_SIZE, collect, &rs2) == -ECANCELED && rs2.n == 2,
	   "a callback's error stops the walk and is returned");
	rs2.stop_at = 0;
	static uint8_t rbuf[BS];
	ok(nbdview_read(v, rbuf, BS, IMG_SIZE - 512) == -EINVAL, "read past the end: -EINVAL");
	ok(nbdview_read(v, rbuf, 512, IMG_SIZE - 512) == 0 &&
		   memcmp(rbuf, mirror + IMG_SIZE - 512, 512) == 0,
	   "read of the last 512 bytes");
	v = nbdview_free(v);

	/* Without a bitmap: allocation only. */
	r = nbdview_open(nbd_path, "ro", NULL, &v);
	ok_r(r, "open without a bitmap %s", nbdview_last_error(NULL));
	if (r == 0) {
		for (size_t i = 0; i < 2; i++) {
			if (i)
				nbdview_set_max_request(v, 6000);
			rs.n = 0;
			memset(got, 0xff, sizeof(got));
			r = nbdview_extents(v, 0, IMG_SIZE, collect, &rs);
			ok(r == 0 && runs_tile(&rs, 0, IMG_SIZE, got) &&
				   kinds_equal(got, want_alloc, NBLOCKS),
			   "no-bitmap walk%s: allocated blocks DATA, holes SKIP (%zu runs)",
			   i ? ", requests of 6000" : "", rs.n);
		}
		bool any_zero = false;
		for (size_t i = 0; i < rs.n; i++)
			any_zero |= rs.r[i].kind == NBDVIEW_ZERO;
		ok(!any_zero && got[0] == NBDVIEW_DATA && got[5] == NBDVIEW_SKIP &&
			   got[50] == NBDVIEW_DATA,
		   "no ZERO runs; old data DATA, a hole SKIP, a partly written block DATA");
		ok(runs_read_back(v, &rs, false), "DATA runs read back the image, SKIP is zeros");
		v = nbdview_free(v);
	}

	/* Errors of open. */
	r = nbdview_open(nbd_path, "ro", "no-such-bitmap", &v);
	ok(r == -ENOENT && strstr(nbdview_last_error(NULL), "no-such-bitmap"),
	   "unknown bitmap: -ENOENT: %s", nbdview_last_error(NULL));
	r = nbdview_open(nbd_path, "rw", BITMAP, &v);
	ok(r == -ENOENT, "a bitmap not exported with that export: -ENOENT");
	r = nbdview_open(nbd_path, "no-such-export", NULL, &v);
	ok(r == -ENOENT && strstr(nbdview_last_error(NULL), "no-such-export"),
	   "unknown export: -ENOENT: %s", nbdview_last_error(NULL));

	test_qemu_big();
	qsd_stop();
	free(mirror);
}

static void test_sockets(void)
{
	char path[256];
	struct nbdview *v = NULL;
	path_in_tmp(path, sizeof(path), "nothing.sock");
	int r = nbdview_open(path, "x", NULL, &v);
	ok(r == -ENOENT, "no socket: -ENOENT: %s", nbdview_last_error(NULL));

	/* Bound but not listening: connect is refused. */
	path_in_tmp(path, sizeof(path), "dead.sock");
	struct sockaddr_un sa;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ok(fd >= 0 && sun_set(&sa, path) && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
	   "a dead socket");
	r = nbdview_open(path, "x", NULL, &v);
	ok(r == -ECONNREFUSED, "nobody listening: -ECONNREFUSED (got %d)", r);
}

static void remove_tmpdir(void)
{
	static const char *const names[] = { "disk.img",  "nbd.sock",  "qmp.sock", "qsd.log",
					     "fake.sock", "dead.sock", "big.img" };
	char p[256];
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		path_in_tmp(p, sizeof(p), names[i]);
		unlink(p);
	}
	rmdir(tmpdir);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot create a temporary directory\n");
		return 0;
	}
	test_fake();
	test_fake_big();
	test_sockets();
	_cleanup_free_ char *qsd = which("qemu-storage-daemon");
	if (qsd)
		test_qemu(qsd);
	else
		ok(1, "# SKIP qemu-storage-daemon not installed (qemu-system-x86)");
	remove_tmpdir();
	return tap_done();
}
