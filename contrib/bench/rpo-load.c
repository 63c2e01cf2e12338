// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * rpo-load: the writer and the checker of contrib/bench/rpo.sh.
 *
 *   rpo-load run --seconds S --rate BYTES_PER_S --out TSV [--drain S]
 *            [--sweep-ms MS] [--region BYTES] [--seed N]
 *            LABEL WRITE CHECK [LABEL WRITE CHECK ...]
 *   rpo-load fill PATH SIZE BYTES SEED
 *
 * run: for each (LABEL, WRITE, CHECK) one writer thread writes random blocks
 * of 4 to 64 KiB (multiples of 4 KiB, at 4 KiB-aligned random offsets within
 * the first --region bytes) into WRITE at BYTES_PER_S, one write at a time:
 * WRITE is an NBD URI (nbd+unix:///EXPORT?socket=PATH; libnbd, the write has
 * completed when the server acknowledges it) or file:PATH (pwrite, then
 * fsync). Every 4 KiB block of a write starts with the write's unique 8-byte
 * stamp; the rest is random. One checker thread reopens each CHECK file (the
 * target's live image through ferryfs) with O_DIRECT every --sweep-ms and
 * reads, in the order the writes completed, one 4 KiB block of each write not
 * yet seen (a block that no later write has overwritten) until it meets one
 * whose stamp is not there yet; when a write turns up, or the image's mtime
 * (the applied marker's time) moved, it reads every write not yet seen, since
 * a scan tracker's cycle is no instant and may ship a write without an older
 * one. Once a second it looks up to 16 writes past the first missing one. A
 * write is visible when the read that found its stamp returned; lag =
 * visible - completed, both CLOCK_MONOTONIC.
 * After --seconds the writers stop and the checker goes on for at most
 * --drain seconds, until every write is seen.
 *
 * Writes every write to TSV (label, seq, offset, length, completed_s,
 * visible_s, lag_s, status: seen, unseen, or superseded when later writes
 * overwrote all of its blocks before it was seen) and a summary per label
 * on stdout as key=value lines.
 *
 * fill: makes PATH a sparse file of SIZE bytes holding BYTES of random data
 * in 1 MiB pieces spread evenly over it (a disk with some data on it).
 *
 * Build: cc -O2 -pthread rpo-load.c $(pkg-config --cflags --libs libnbd)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libnbd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define MAXBLKS 16u /* 64 KiB */
#define DEEP_MISSES 16

enum {
	PENDING = 0,
	SEEN = 1,
	SUPERSEDED = 2
};

struct wr {
	uint64_t off;
	uint32_t len;
	int64_t done_ns;
	int64_t vis_ns;
	int state; /* checker only */
};

struct target {
	int idx;
	const char *label, *wspec, *check;
	struct nbd_handle *nbd;
	int wfd;
	uint64_t size, region;
	struct wr *w;
	size_t cap;
	_Atomic size_t n;
	_Atomic uint32_t *owner; /* per 4 KiB block: 1 + the write whose stamp it holds */
	size_t front;            /* checker: first write not seen nor superseded */
	uint64_t bytes, late_resets;
	uint64_t seed;
	pthread_t th;
	int open_errors;
	struct timespec mtime; /* checker: the live image's, at the last sweep */
};

static struct target *targets;
static int ntargets;
static double rate, seconds, drain = 60;
static uint64_t region_opt, nonce;
static int64_t sweep_ns = 50000000, start_ns, end_ns;
static atomic_int writers_left;
static atomic_int failed;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = { .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(uint64_t *s, void *buf, size_t len)
{
	uint64_t *p = buf;
	for (size_t i = 0; i < len / 8; i++)
		p[i] = splitmix(s);
}

static uint64_t stamp_of(const struct target *t, size_t i)
{
	return nonce ^ ((uint64_t)t->idx << 40) ^ (uint64_t)(i + 1);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("rpo-load: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void target_open(struct target *t)
{
	if (strncmp(t->wspec, "file:", 5) == 0) {
		struct stat st;
		t->wfd = open(t->wspec + 5, O_RDWR | O_CLOEXEC);
		if (t->wfd < 0 || fstat(t->wfd, &st) < 0)
			die("%s: cannot open %s: %s", t->label, t->wspec + 5, strerror(errno));
		t->size = (uint64_t)st.st_size;
	} else {
		t->wfd = -1;
		t->nbd = nbd_create();
		if (!t->nbd || nbd_connect_uri(t->nbd, t->wspec) < 0)
			die("%s: cannot connect to %s: %s", t->label, t->wspec, nbd_get_error());
		int64_t sz = nbd_get_size(t->nbd);
		if (sz < 0)
			die("%s: %s", t->label, nbd_get_error());
		if (nbd_is_read_only(t->nbd) == 1)
			die("%s: the export %s is read-only", t->label, t->wspec);
		t->size = (uint64_t)sz;
	}
	t->region = region_opt && region_opt < t->size ? region_opt : t->size;
	t->region -= t->region % BLK;
	if (t->region < MAXBLKS * BLK)
		die("%s: disk too small", t->label);
	/* Every write is at least 4 KiB: this many can never be outrun. */
	t->cap = (size_t)(rate * seconds / BLK) + 1024;
	t->w = calloc(t->cap, sizeof(*t->w));
	/* calloc of a large size maps zero pages: only touched blocks cost. */
	t->owner = calloc(t->region / BLK, sizeof(*t->owner));
	if (!t->w || !t->owner)
		die("out of memory");
}

static void *writer(void *arg)
{
	struct target *t = arg;
	uint64_t s = t->seed;
	void *buf;
	if (posix_memalign(&buf, BLK, MAXBLKS * BLK))
		die("out of memory");
	int64_t sched = start_ns;
	uint64_t nblk = t->region / BLK;
	while (sched < end_ns) {
		size_t i = atomic_load_explicit(&t->n, memory_order_relaxed);
		if (i >= t->cap)
			break;
		uint32_t blks = 1 + (uint32_t)(splitmix(&s) % MAXBLKS);
		uint64_t b0 = splitmix(&s) % (nblk - blks + 1);
		uint32_t len = blks * BLK;
		fill_random(&s, buf, len);
		uint64_t st = stamp_of(t, i);
		for (uint32_t k = 0; k < blks; k++)
			memcpy((char *)buf + (size_t)k * BLK, &st, 8);
		/* Claimed before the write: the checker never reads a block for
		 * an older write once this one may have landed there. */
		for (uint32_t k = 0; k < blks; k++)
			atomic_store(&t->owner[b0 + k], (uint32_t)(i + 1));
		sleep_until(sched);
		int r;
		if (t->nbd)
			r = nbd_pwrite(t->nbd, buf, len, b0 * BLK, 0);
		else {
			r = pwrite(t->wfd, buf, len, (off_t)(b0 * BLK)) == (ssize_t)len ? 0 : -1;
			if (r == 0)
				r = fsync(t->wfd);
		}
		int64_t done = now_ns();
		if (r < 0) {
			fprintf(stderr, "rpo-load: %s: write failed: %s\n", t->label,
				t->nbd ? nbd_get_error() : strerror(errno));
			atomic_store(&failed, 1);
			break;
		}
		t->w[i] = (struct wr){ .off = b0 * BLK, .len = len, .done_ns = done };
		atomic_store_explicit(&t->n, i + 1, memory_order_release);
		t->bytes += len;
		sched += (int64_t)((double)len * 1e9 / rate);
		/* More than a second behind: the writer cannot keep up; start
		 * the schedule afresh rather than burst (the summary says). */
		if (done - sched > 1000000000) {
			sched = done;
			t->late_resets++;
		}
	}
	free(buf);
	atomic_fetch_sub(&writers_left, 1);
	return NULL;
}

/* The block to read for write i: its first block that no later write has
 * claimed, or -1 when there is none. */
static int64_t owned_block(struct target *t, size_t i)
{
	const struct wr *w = &t->w[i];
	for (uint64_t b = w->off / BLK; b < (w->off + w->len) / BLK; b++)
		if (atomic_load(&t->owner[b]) == (uint32_t)(i + 1))
			return (int64_t)b;
	return -1;
}

static uint64_t reads, sweeps, open_fail;
static int64_t sweep_max_ns, sweep_sum_ns;

static void sweep(int deep, void *buf)
{
	for (int k = 0; k < ntargets; k++) {
		struct target *t = &targets[k];
		size_t n = atomic_load_explicit(&t->n, memory_order_acquire);
		while (t->front < n && t->w[t->front].state != PENDING)
			t->front++;
		if (t->front >= n)
			continue;
		/* Reopened every time: an open handle keeps the live map it
		 * resolved at open. */
		int fd = open(t->check, O_RDONLY | O_DIRECT | O_CLOEXEC);
		if (fd < 0) {
			open_fail++;
			if (t->open_errors++ == 0)
				fprintf(stderr, "rpo-load: %s: cannot open %s: %s\n", t->label,
					t->check, strerror(errno));
			continue;
		}
		/* The live image changes when the replicator applies a marker,
		 * which also moves its mtime: then, or when a write turns up,
		 * every pending write is read, since the scan tracker's cuts
		 * are not instants (a write may arrive before an older one). */
		struct stat sb;
		int full = 0;
		if (fstat(fd, &sb) == 0 && (sb.st_mtim.tv_sec != t->mtime.tv_sec ||
					    sb.st_mtim.tv_nsec != t->mtime.tv_nsec)) {
			full = t->mtime.tv_sec || t->mtime.tv_nsec;
			t->mtime = sb.st_mtim;
		}
		int misses = 0, limit = deep ? DEEP_MISSES : 1;
		for (size_t i = t->front; i < n && (full || misses < limit); i++) {
			struct wr *w = &t->w[i];
			if (w->state != PENDING)
				continue;
			int64_t b = owned_block(t, i);
			if (b < 0) {
				w->state = SUPERSEDED;
				continue;
			}
			ssize_t got = pread(fd, buf, BLK, b * (int64_t)BLK);
			int64_t when = now_ns();
			reads++;
			uint64_t st = stamp_of(t, i);
			if (got == (ssize_t)BLK && memcmp(buf, &st, 8) == 0) {
				w->vis_ns = when;
				w->state = SEEN;
				full = 1;
			} else {
				misses++;
			}
		}
		close(fd);
	}
}

static int all_resolved(void)
{
	for (int k = 0; k < ntargets; k++) {
		struct target *t = &targets[k];
		size_t n = atomic_load_explicit(&t->n, memory_order_acquire);
		for (size_t i = t->front; i < n; i++)
			if (t->w[i].state == PENDING)
				return 0;
	}
	return 1;
}

static void checker(void)
{
	void *buf;
	if (posix_memalign(&buf, BLK, BLK))
		die("out of memory");
	int64_t next = start_ns, last_deep = start_ns, deadline = 0;
	for (;;) {
		sleep_until(next);
		int64_t t0 = now_ns();
		int deep = t0 - last_deep >= 1000000000;
		if (deep)
			last_deep = t0;
		sweep(deep, buf);
		int64_t d = now_ns() - t0;
		sweeps++;
		sweep_sum_ns += d;
		if (d > sweep_max_ns)
			sweep_max_ns = d;
		if (atomic_load(&writers_left) == 0) {
			if (!deadline)
				deadline = now_ns() + (int64_t)(drain * 1e9);
			if (all_resolved() || now_ns() >= deadline || atomic_load(&failed))
				break;
		}
		next += sweep_ns;
		if (next < now_ns())
			next = now_ns();
	}
	free(buf);
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "rate", required_argument, NULL, 'r' },
		{ "out", required_argument, NULL, 'o' },
		{ "drain", required_argument, NULL, 'd' },
		{ "sweep-ms", required_argument, NULL, 'w' },
		{ "region", required_argument, NULL, 'g' },
		{ "seed", required_argument, NULL, 'e' },
		{ 0 },
	};
	const char *out = NULL;
	uint64_t seed = 1;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 's':
			seconds = atof(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'o':
			out = optarg;
			break;
		case 'd':
			drain = atof(optarg);
			break;
		case 'w':
			sweep_ns = (int64_t)(atof(optarg) * 1e6);
			break;
		case 'g':
			region_opt = strtoull(optarg, NULL, 0);
			break;
		case 'e':
			seed = strtoull(optarg, NULL, 0);
			break;
		default:
			return 2;
		}
	}
	if (seconds <= 0 || rate <= 0 || !out || sweep_ns <= 0 || optind >= argc ||
	    (argc - optind) % 3)
		die("usage: rpo-load run --seconds S --rate BYTES_PER_S --out TSV [--drain S] "
		    "[--sweep-ms MS] [--region BYTES] [--seed N] LABEL WRITE CHECK [...]");
	FILE *f = fopen(out, "w");
	if (!f)
		die("cannot write %s: %s", out, strerror(errno));
	if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
		die("getrandom: %s", strerror(errno));
	ntargets = (argc - optind) / 3;
	targets = calloc((size_t)ntargets, sizeof(*targets));
	if (!targets)
		die("out of memory");
	for (int k = 0; k < ntargets; k++) {
		struct target *t = &targets[k];
		t->idx = k;
		t->label = argv[optind + 3 * k];
		t->wspec = argv[optind + 3 * k + 1];
		t->check = argv[optind + 3 * k + 2];
		t->seed = seed * 1000003 + (uint64_t)k;
		target_open(t);
	}
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	start_ns = now_ns() + 100000000;
	end_ns = start_ns + (int64_t)(seconds * 1e9);
	printf("start_epoch=%.3f\n", (double)rt.tv_sec + rt.tv_nsec / 1e9 + 0.1);
	atomic_store(&writers_left, ntargets);
	for (int k = 0; k < ntargets; k++)
		if (pthread_create(&targets[k].th, NULL, writer, &targets[k]))
			die("pthread_create failed");
	checker();
	for (int k = 0; k < ntargets; k++)
		pthread_join(targets[k].th, NULL);
	clock_gettime(CLOCK_REALTIME, &rt);
	printf("end_epoch=%.3f\n", (double)rt.tv_sec + rt.tv_nsec / 1e9);

	fprintf(f, "label\tseq\toffset\tlength\tcompleted_s\tvisible_s\tlag_s\tstatus\n");
	for (int k = 0; k < ntargets; k++) {
		struct target *t = &targets[k];
		size_t n = atomic_load(&t->n), seen = 0, sup = 0, unseen = 0;
		int64_t last_done = start_ns;
		for (size_t i = 0; i < n; i++) {
			const struct wr *w = &t->w[i];
			double done = (double)(w->done_ns - start_ns) / 1e9;
			if (w->done_ns > last_done)
				last_done = w->done_ns;
			fprintf(f, "%s\t%zu\t%" PRIu64 "\t%u\t%.6f\t", t->label, i, w->off, w->len,
				done);
			if (w->state == SEEN) {
				fprintf(f, "%.6f\t%.6f\tseen\n",
					(double)(w->vis_ns - start_ns) / 1e9,
					(double)(w->vis_ns - w->done_ns) / 1e9);
				seen++;
			} else {
				fprintf(f, "\t\t%s\n",
					w->state == SUPERSEDED ? "superseded" : "unseen");
				if (w->state == SUPERSEDED)
					sup++;
				else
					unseen++;
			}
		}
		double secs = (double)(last_done - start_ns) / 1e9;
		printf("label=%s writes=%zu bytes=%" PRIu64 " write_seconds=%.3f achieved_Bps=%.0f "
		       "seen=%zu superseded=%zu unseen=%zu late_resets=%" PRIu64
		       " open_errors=%d\n",
		       t->label, n, t->bytes, secs, secs > 0 ? (double)t->bytes / secs : 0, seen,
		       sup, unseen, t->late_resets, t->open_errors);
		if (t->nbd) {
			nbd_shutdown(t->nbd, 0);
			nbd_close(t->nbd);
		}
	}
	printf("sweeps=%" PRIu64 " reads=%" PRIu64 " sweep_mean_ms=%.2f sweep_max_ms=%.2f "
	       "sweep_interval_ms=%.1f open_fail=%" PRIu64 "\n",
	       sweeps, reads, sweeps ? (double)sweep_sum_ns / (double)sweeps / 1e6 : 0,
	       (double)sweep_max_ns / 1e6, (double)sweep_ns / 1e6, open_fail);
	if (fclose(f) != 0)
		die("cannot write %s", out);
	return atomic_load(&failed) ? 1 : 0;
}

static int fill(int argc, char **argv)
{
	if (argc != 6)
		die("usage: rpo-load fill PATH SIZE BYTES SEED");
	uint64_t size = strtoull(argv[3], NULL, 0), bytes = strtoull(argv[4], NULL, 0);
	uint64_t s = strtoull(argv[5], NULL, 0), piece = 1 << 20;
	int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		die("%s: %s", argv[2], strerror(errno));
	uint64_t pieces = bytes / piece, slots = size / piece;
	if (pieces > slots)
		pieces = slots;
	void *buf = malloc(piece);
	if (!buf)
		die("out of memory");
	for (uint64_t k = 0; k < pieces; k++) {
		fill_random(&s, buf, piece);
		off_t at = (off_t)(k * slots / pieces * piece);
		if (pwrite(fd, buf, piece, at) != (ssize_t)piece)
			die("%s: %s", argv[2], strerror(errno));
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		die("%s: %s", argv[2], strerror(errno));
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return run(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "fill") == 0)
		return fill(argc, argv);
	fprintf(stderr, "usage: rpo-load run ... | rpo-load fill PATH SIZE BYTES SEED\n"
			"(see the comment at the top of contrib/bench/rpo-load.c)\n");
	return 2;
}
