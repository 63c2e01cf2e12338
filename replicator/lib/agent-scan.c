/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `scan` tracker: each cycle reads every disk of the VM in big sequential
 * reads (skipping holes with SEEK_DATA/SEEK_HOLE), fingerprints every 4 KiB
 * block (XXH3-128; all-zero blocks are found by a word compare and get the
 * all-zero fingerprint), compares with the fingerprints of the last complete
 * cycle and ships the blocks that differ as DATA records and newly zeroed
 * ranges as ZERO records, cut into segments of about 16 MiB. The last
 * segment carries the crash-consistent marker.
 *
 * Crash safety rests on one invariant: the progress file names a position
 * (disk, offset) such that every change before it is in a segment that is
 * durably in the cache, and the pending fingerprints (<disk>.fp.new) before
 * it are durably on disk. Comparisons always read the committed <disk>.fp,
 * so whatever a killed run left in the pending files beyond that position is
 * simply rewritten. Only when the marker segment is in the cache do the
 * pending files replace the committed ones. Format: docs/format/agent-state.md.
 */
#include "agent-scan.h"
#include "agent-scan-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/cache.h"
#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/log.h"
#include "ferry/util.h"

#define BLOCK FERRY_BLOCK_SIZE
/* One read, and the largest DATA record: big enough to stream at device
 * speed, small enough to stay in L2-ish territory while it is hashed. */
#define READ_SIZE (1024u * 1024u)
#define READ_BLOCKS (READ_SIZE / BLOCK)
/* Segments are cut once their plain size passes this. */
#define SEGMENT_CUT (16u * 1024u * 1024u)
/* How often a running cycle records its progress (see struct shipper). */
#define RECORD_EVERY_NS (INT64_C(1000000000))
/* Fingerprint entries examined at a time over holes. */
#define HOLE_FPS 4096u

/* Fingerprint file (<disk>.fp, <disk>.fp.new), all little-endian. */
#define FP_MAGIC "FERRY-FP"
#define FP_MAJOR 1
#define FP_MINOR 0
#define FP_HDR_SIZE 64u
#define FP_ENTRY 16u
#define FP_FLAG_COMPLETE 1u
#define FP_O_MAJOR 8
#define FP_O_MINOR 10
#define FP_O_BLOCK 12
#define FP_O_SIZE 16
#define FP_O_NBLOCKS 24
#define FP_O_FLAGS 32
#define FP_O_BODYSUM 40
#define FP_O_HDRSUM 56
/* The body checksum hashes the body in pieces of this size. */
#define FP_SUM_PIECE (1024u * 1024u)

#define PROGRESS_MAGIC "FERRY-AGENT-PROGRESS"
#define PROGRESS_MAJOR 1

static const char *const pstate_names[] = { "idle", "scanning", "committing" };

struct disk {
	const char *name, *path;
	int fd;
	uint64_t size;    /* bytes, as the disk reports it */
	uint64_t aligned; /* size rounded up to a block */
	uint64_t nblocks;
	int old_fd; /* committed fingerprints; -1: none (first cycle or reset) */
	int new_fd; /* pending fingerprints of this cycle; -1 until reached */
	int dirty;  /* new_fd written since its last fsync */
	int no_seek_data;
	char *fp_path, *new_path;
};

enum run_type {
	RUN_NONE,
	RUN_DATA,
	RUN_ZERO
};

/* A segment on its way out: encode it (compression is most of the agent's
 * CPU, so it runs here, beside the scan), put it, make the pending
 * fingerprints behind it durable, then record the progress it carries. */
struct job {
	struct job *next;
	struct ferry_segment_writer *w;
	int chained;     /* prev is the digest of the job before (not known at ship) */
	int encoded;     /* buf is ready (or encode_error says why not) */
	int must_record; /* record the progress whatever the time (end, stop) */
	int encode_error;
	void *buf;
	size_t len;
	uint64_t seq;
	uint64_t data_bytes;
	struct progress pr;
	size_t nfds;
	int fds[]; /* pending fingerprint files to sync first */
};

/*
 * Three stages overlap: the scan fills a segment, the encoder thread
 * compresses the one before (on all cores), and the shipper thread puts
 * the one before that; putting is mostly waiting for the cache to make it
 * durable. Jobs are encoded and put strictly in order: each is chained to
 * the digest of the one before, and the progress file only ever moves
 * forward over segments that are in the cache.
 */
struct shipper {
	pthread_t thread, encoder;
	int started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;
	struct job *to_encode;          /* the first queued job not yet encoded */
	struct ferry_id encoded_digest; /* of the last job encoded */
	size_t pending;                 /* queued or running */
	int error;                      /* first failure; later jobs are dropped */
	int quit;
	uint64_t shipped_bytes, segments, last_seq;
	struct ferry_id last_digest; /* of last_seq */
	/* Progress is recorded at most every RECORD_EVERY_NS (and at the end):
	 * each record costs syncs, and a crash in between only means that the
	 * segments put since are found by reconcile() and the scan resumes a
	 * little earlier. Fingerprint files are synced just before a record. */
	int64_t last_record_ns;
	int unsynced[8];
	size_t nunsynced;
	int unsynced_overflow; /* more than fit above: sync every disk */
	/* Writers the shipper is done with, for the scan to reuse. */
	struct ferry_segment_writer *spare[4];
	size_t nspare;
};

struct run {
	enum run_type type;
	uint64_t start, len;
	const uint8_t *data;
};

struct scan {
	const struct agent_scan_params *p;
	char *progress_path;
	char *disks_list; /* "os,data": the configuration the state belongs to */
	struct progress pr;
	struct disk *disks;
	size_t ndisks;
	uint64_t total;
	struct ferry_segment_writer *w;
	int prev_pending;      /* pr.prev awaits the digest of a segment being shipped */
	uint32_t w_payload;    /* records besides the disk declarations */
	uint64_t w_data_bytes; /* DATA bytes in the open segment */
	uint8_t *buf;
	uint8_t newfp[READ_BLOCKS * FP_ENTRY];
	uint8_t oldfp[HOLE_FPS * FP_ENTRY];
	struct run run;
	struct agent_scan_stats st;
	struct shipper sh;
};

/* ---- small helpers ---- */

static int block_is_zero(const uint8_t *p)
{
	/* Word compare, eight words at a time, bailing out at the first
	 * non-zero group: almost free next to hashing for data blocks, and
	 * the common zero block costs one pass at memory speed. */
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < BLOCK / 8; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		    w[i + 7])
			return 0;
	return 1;
}

static int fp_is_zero(const uint8_t *e)
{
	return get_le64(e) == 0 && get_le64(e + 8) == 0;
}

static void put_fp(uint8_t *e, const struct ferry_fp *fp)
{
	put_le64(e, fp->lo);
	put_le64(e + 8, fp->hi);
}

static off_t fp_pos(uint64_t block)
{
	return (off_t)(FP_HDR_SIZE + block * FP_ENTRY);
}

static uint64_t round_up_block(uint64_t v)
{
	return (v + BLOCK - 1) / BLOCK * BLOCK;
}

/* ---- the progress file ---- */

static int progress_write(struct scan *s, const struct progress *pr)
{
	char hex[FERRY_ID_HEX_SIZE];
	_cleanup_free_ char *body = NULL;
	int n = asprintf(&body,
			 "%s %d\n"
			 "vm=%s\n"
			 "disks=%s\n"
			 "cycle=%" PRIu64 "\n"
			 "state=%s\n"
			 "next_seq=%" PRIu64 "\n"
			 "prev=%s\n"
			 "disk=%" PRIu64 "\n"
			 "offset=%" PRIu64 "\n"
			 "cycle_shipped_bytes=%" PRIu64 "\n"
			 "cycle_segments=%" PRIu64 "\n"
			 "total_shipped_bytes=%" PRIu64 "\n"
			 "marker_time_ns=%" PRId64 "\n",
			 PROGRESS_MAGIC, PROGRESS_MAJOR, s->p->vm, s->disks_list, pr->cycle,
			 pstate_names[pr->state], pr->next_seq, ferry_id_to_hex(&pr->prev, hex),
			 pr->disk, pr->offset, pr->cycle_shipped, pr->cycle_segments,
			 pr->total_shipped, pr->marker_time_ns);
	if (n < 0)
		return -ENOMEM;
	struct ferry_id sum;
	ferry_sha256(body, (size_t)n, &sum);
	_cleanup_free_ char *all = NULL;
	int m = asprintf(&all, "%schecksum=%s\n", body, ferry_id_to_hex(&sum, hex));
	if (m < 0)
		return -ENOMEM;
	int r = ferry_write_file_atomic(s->progress_path, all, (size_t)m);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot write %s", s->p->vm, s->progress_path);
	return 0;
}

/* Unknown keys are ignored: they are minor additions. */
int agent_progress_parse(char *text, size_t len, const char *vm, const char *disks_list,
			 struct progress *ret)
{
	if (len == 0 || text[len - 1] != '\n' || strlen(text) != len)
		return -EBADMSG;

	/* The checksum line is the last one and covers every byte before it. */
	text[len - 1] = 0;
	char *last = strrchr(text, '\n');
	if (!last || strncmp(last + 1, "checksum=", 9) != 0)
		return -EBADMSG;
	struct ferry_id want, have;
	if (ferry_id_from_hex(last + 1 + 9, &want) < 0)
		return -EBADMSG;
	ferry_sha256(text, (size_t)(last + 1 - text), &have);
	if (!ferry_id_equal(&want, &have))
		return -EBADMSG;
	*last = 0;

	char *save = NULL;
	char *line = strtok_r(text, "\n", &save);
	size_t ml = strlen(PROGRESS_MAGIC);
	if (!line || strncmp(line, PROGRESS_MAGIC, ml) != 0 || line[ml] != ' ')
		return -EBADMSG;
	uint64_t major;
	if (ferry_parse_u64(line + ml + 1, strlen(line + ml + 1), UINT64_MAX, &major) < 0)
		return -EBADMSG;
	if (major != PROGRESS_MAJOR)
		return -EPROTONOSUPPORT;

	struct progress pr = { 0 };
	unsigned seen = 0;
	enum {
		K_VM,
		K_DISKS,
		K_CYCLE,
		K_STATE,
		K_SEQ,
		K_PREV,
		K_DISK,
		K_OFFSET,
		K_CSB,
		K_CSEG,
		K_TSB,
		K_MARKER,
		K_MAX
	};
	static const char *const keys[K_MAX] = {
		"vm",
		"disks",
		"cycle",
		"state",
		"next_seq",
		"prev",
		"disk",
		"offset",
		"cycle_shipped_bytes",
		"cycle_segments",
		"total_shipped_bytes",
		"marker_time_ns",
	};
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *eq = strchr(line, '=');
		if (!eq)
			return -EBADMSG;
		*eq = 0;
		const char *v = eq + 1;
		int k;
		for (k = 0; k < K_MAX; k++)
			if (strcmp(line, keys[k]) == 0)
				break;
		if (k == K_MAX)
			continue;
		if (seen & (1u << k))
			return -EBADMSG;
		seen |= 1u << k;
		uint64_t u = 0;
		int r = 0;
		switch (k) {
		case K_VM:
			if (strcmp(v, vm) != 0)
				return -EXDEV;
			break;
		case K_DISKS:
			if (strcmp(v, disks_list) != 0)
				return -ECHILD;
			break;
		case K_STATE:
			for (u = 0; u < ARRAY_SIZE(pstate_names); u++)
				if (strcmp(v, pstate_names[u]) == 0)
					break;
			if (u == ARRAY_SIZE(pstate_names))
				return -EBADMSG;
			pr.state = (enum pstate)u;
			break;
		case K_PREV:
			r = ferry_id_from_hex(v, &pr.prev);
			break;
		case K_MARKER: {
			/* An i64: refuse what does not fit rather than wrap. */
			size_t neg = v[0] == '-';
			r = ferry_parse_u64(v + neg, strlen(v + neg), (uint64_t)INT64_MAX + neg,
					    &u);
			if (r >= 0)
				pr.marker_time_ns = neg ? (int64_t)(0 - u) : (int64_t)u;
			break;
		}
		default:
			r = ferry_parse_u64(v, strlen(v), UINT64_MAX, &u);
			if (k == K_CYCLE)
				pr.cycle = u;
			else if (k == K_SEQ)
				pr.next_seq = u;
			else if (k == K_DISK)
				pr.disk = u;
			else if (k == K_OFFSET)
				pr.offset = u;
			else if (k == K_CSB)
				pr.cycle_shipped = u;
			else if (k == K_CSEG)
				pr.cycle_segments = u;
			else if (k == K_TSB)
				pr.total_shipped = u;
		}
		if (r < 0)
			return -EBADMSG;
	}
	if (seen != (1u << K_MAX) - 1 || pr.cycle == 0 || pr.next_seq == 0 ||
	    (pr.next_seq == 1) != !!ferry_id_is_null(&pr.prev))
		return -EBADMSG;
	*ret = pr;
	return 0;
}

static int progress_load(struct scan *s)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = ferry_read_file(s->progress_path, (void **)&text, &len);
	s->prev_pending = 0;
	if (r == -ENOENT) {
		s->pr = (struct progress){ .cycle = 1, .state = P_IDLE, .next_seq = 1 };
		return 0;
	}
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot read %s", s->p->vm, s->progress_path);
	r = agent_progress_parse(text, len, s->p->vm, s->disks_list, &s->pr);
	if (r == -EXDEV)
		return log_error_errno(-EINVAL,
				       "%s belongs to another VM than %s: use a state "
				       "directory per VM",
				       s->progress_path, s->p->vm);
	if (r == -ECHILD)
		return log_error_errno(-EINVAL,
				       "VM %s: the disks in the configuration (%s) differ "
				       "from those of the state directory (see %s); adding, "
				       "removing or reordering disks is not supported yet",
				       s->p->vm, s->disks_list, s->progress_path);
	if (r == -EPROTONOSUPPORT)
		return log_error_errno(r, "VM %s: %s has a version this agent does not know",
				       s->p->vm, s->progress_path);
	if (r < 0)
		return log_error_errno(r,
				       "VM %s: %s is damaged; remove the state directory to "
				       "start over with a resync from the vault",
				       s->p->vm, s->progress_path);
	return 0;
}

/* ---- fingerprint files ---- */

static int fp_body_sum(int fd, uint64_t nblocks, uint8_t sum[16])
{
	uint64_t body = nblocks * FP_ENTRY;
	uint64_t npieces = DIV_ROUND_UP(body, FP_SUM_PIECE);
	_cleanup_free_ uint8_t *piece = malloc(FP_SUM_PIECE);
	_cleanup_free_ uint8_t *sums = malloc(MAX(npieces, 1) * 16);
	if (!piece || !sums)
		return -ENOMEM;
	for (uint64_t i = 0; i < npieces; i++) {
		size_t n = (size_t)MIN((uint64_t)FP_SUM_PIECE, body - i * FP_SUM_PIECE);
		int r = ferry_pread_all(fd, piece, n, (off_t)(FP_HDR_SIZE + i * FP_SUM_PIECE));
		if (r < 0)
			return r;
		struct ferry_fp fp;
		ferry_fingerprint(piece, n, &fp);
		put_fp(sums + i * 16, &fp);
	}
	struct ferry_fp fp;
	ferry_fingerprint(sums, npieces * 16, &fp);
	put_fp(sum, &fp);
	return 0;
}

static void fp_header_build(uint8_t h[FP_HDR_SIZE], uint64_t size, uint64_t nblocks, uint32_t flags,
			    const uint8_t bodysum[16])
{
	memset(h, 0, FP_HDR_SIZE);
	memcpy(h, FP_MAGIC, 8);
	put_le16(h + FP_O_MAJOR, FP_MAJOR);
	put_le16(h + FP_O_MINOR, FP_MINOR);
	put_le32(h + FP_O_BLOCK, BLOCK);
	put_le64(h + FP_O_SIZE, size);
	put_le64(h + FP_O_NBLOCKS, nblocks);
	put_le32(h + FP_O_FLAGS, flags);
	if (bodysum)
		memcpy(h + FP_O_BODYSUM, bodysum, 16);
	struct ferry_fp fp;
	ferry_fingerprint(h, FP_O_HDRSUM, &fp);
	put_le64(h + FP_O_HDRSUM, fp.lo);
}

int agent_fp_header_read(int fd, uint64_t *ret_size, uint32_t *ret_flags, uint8_t ret_sum[16])
{
	uint8_t h[FP_HDR_SIZE];
	int r = ferry_pread_all(fd, h, sizeof(h), 0);
	if (r < 0)
		return r;
	if (memcmp(h, FP_MAGIC, 8) != 0)
		return -EBADMSG;
	struct ferry_fp fp;
	ferry_fingerprint(h, FP_O_HDRSUM, &fp);
	if (get_le64(h + FP_O_HDRSUM) != fp.lo)
		return -EBADMSG;
	if (get_le16(h + FP_O_MAJOR) != FP_MAJOR)
		return -EPROTONOSUPPORT;
	uint64_t size = get_le64(h + FP_O_SIZE), nblocks = get_le64(h + FP_O_NBLOCKS);
	if (get_le32(h + FP_O_BLOCK) != BLOCK || size > (UINT64_C(1) << 62) ||
	    nblocks != DIV_ROUND_UP(size, BLOCK))
		return -EBADMSG;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != FP_HDR_SIZE + nblocks * FP_ENTRY)
		return -EBADMSG;
	*ret_size = size;
	*ret_flags = get_le32(h + FP_O_FLAGS);
	if (ret_sum)
		memcpy(ret_sum, h + FP_O_BODYSUM, 16);
	return 0;
}

int agent_fp_create(int fd, uint64_t size)
{
	uint8_t h[FP_HDR_SIZE];
	uint64_t nblocks = DIV_ROUND_UP(size, BLOCK);
	fp_header_build(h, size, nblocks, 0, NULL);
	int r = ferry_pwrite_all(fd, h, sizeof(h), 0);
	if (r >= 0 && ftruncate(fd, fp_pos(nblocks)) < 0)
		r = -errno;
	return r;
}

int agent_fp_seal(int fd)
{
	uint64_t size;
	uint32_t flags;
	uint8_t sum[16];
	int r = agent_fp_header_read(fd, &size, &flags, NULL);
	if (r >= 0)
		r = fp_body_sum(fd, DIV_ROUND_UP(size, BLOCK), sum);
	if (r < 0)
		return r;
	uint8_t h[FP_HDR_SIZE];
	fp_header_build(h, size, DIV_ROUND_UP(size, BLOCK), FP_FLAG_COMPLETE, sum);
	return ferry_pwrite_all(fd, h, sizeof(h), 0);
}

int agent_fp_check(int fd, uint64_t *ret_size)
{
	uint64_t size;
	uint32_t flags;
	uint8_t want[16], have[16];
	int r = agent_fp_header_read(fd, &size, &flags, want);
	if (r >= 0 && !(flags & FP_FLAG_COMPLETE))
		r = -EBADMSG;
	if (r >= 0)
		r = fp_body_sum(fd, DIV_ROUND_UP(size, BLOCK), have);
	if (r >= 0 && memcmp(want, have, 16) != 0)
		r = -EBADMSG;
	if (r >= 0)
		*ret_size = size;
	return r;
}

void agent_fp_entry(const void *block, uint8_t entry[16])
{
	struct ferry_fp fp = { 0, 0 };
	if (!block_is_zero(block)) {
		ferry_fingerprint(block, BLOCK, &fp);
		/* The all-zero value means "zero block"; keep data off it. */
		if (fp.lo == 0 && fp.hi == 0)
			fp.lo = 1;
	}
	put_fp(entry, &fp);
}

/* Opens the committed fingerprints of a disk. A damaged file is not fatal:
 * the disk is then treated as unknown and resynchronized whole. */
static int fp_open_old(struct scan *s, struct disk *d, uint64_t *ret_size)
{
	_cleanup_close_ int fd = open(d->fp_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			*ret_size = UINT64_MAX;
			return 0;
		}
		return log_error_errno(-errno, "VM %s, disk %s: cannot open %s", s->p->vm, d->name,
				       d->fp_path);
	}
	uint64_t size;
	int r = agent_fp_check(fd, &size);
	if (r == -EBADMSG || r == -EPROTONOSUPPORT) {
		log_warning_errno(r,
				  "VM %s, disk %s: %s is unusable; the disk will be "
				  "resynchronized whole",
				  s->p->vm, d->name, d->fp_path);
		*ret_size = UINT64_MAX;
		return 0;
	}
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot read %s", s->p->vm, d->name,
				       d->fp_path);
	d->old_fd = TAKE_FD(fd);
	*ret_size = size;
	return 0;
}

/* A fresh pending file: header, then all-zero (sparse) fingerprints, so
 * that holes of the disk cost no writes at all. */
static int fp_create_new(struct scan *s, struct disk *d)
{
	if (d->new_fd >= 0) {
		close(d->new_fd);
		d->new_fd = -1;
	}
	_cleanup_close_ int fd =
		open(d->new_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, FERRY_FILE_MODE);
	if (fd < 0)
		return log_error_errno(-errno, "VM %s, disk %s: cannot create %s", s->p->vm,
				       d->name, d->new_path);
	uint8_t h[FP_HDR_SIZE];
	fp_header_build(h, d->size, d->nblocks, 0, NULL);
	int r = ferry_pwrite_all(fd, h, sizeof(h), 0);
	if (r >= 0 && ftruncate(fd, fp_pos(d->nblocks)) < 0)
		r = -errno;
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot write %s", s->p->vm, d->name,
				       d->new_path);
	d->new_fd = TAKE_FD(fd);
	d->dirty = 1;
	return 0;
}

/* Zeroes fingerprint entries [from, to) of a pending file: what a killed run
 * wrote beyond the durable position must not look like known content. */
static int fp_zero_range(int fd, uint64_t from, uint64_t to)
{
	if (from >= to)
		return 0;
	off_t off = fp_pos(from), len = fp_pos(to) - off;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	static const uint8_t zeros[64 * 1024];
	while (len > 0) {
		size_t n = (size_t)MIN((off_t)sizeof(zeros), len);
		int r = ferry_pwrite_all(fd, zeros, n, off);
		if (r < 0)
			return r;
		off += (off_t)n;
		len -= (off_t)n;
	}
	return 0;
}

/* Reopens the pending file of a disk the interrupted cycle already reached;
 * -ESTALE when it is missing or does not fit, so that the caller restarts. */
static int fp_reopen_new(struct scan *s, struct disk *d, uint64_t valid_blocks)
{
	_cleanup_close_ int fd = open(d->new_path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE :
					 log_error_errno(-errno, "VM %s, disk %s: cannot open %s",
							 s->p->vm, d->name, d->new_path);
	uint64_t size;
	uint32_t flags;
	int r = agent_fp_header_read(fd, &size, &flags, NULL);
	if (r == -EBADMSG || r == -EPROTONOSUPPORT || (r >= 0 && size != d->size))
		return -ESTALE;
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot read %s", s->p->vm, d->name,
				       d->new_path);
	r = fp_zero_range(fd, valid_blocks, d->nblocks);
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot write %s", s->p->vm, d->name,
				       d->new_path);
	if (d->new_fd >= 0)
		close(d->new_fd);
	d->new_fd = TAKE_FD(fd);
	d->dirty = 1;
	return 0;
}

/* Seals a pending file (body checksum, complete flag) and renames it over
 * the committed one. Idempotent: a crash half-way is finished next start. */
static int fp_commit(struct scan *s, struct disk *d)
{
	_cleanup_close_ int fd = open(d->new_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		/* Already renamed by a commit that crashed later on. */
		if (errno == ENOENT && access(d->fp_path, F_OK) == 0)
			return 0;
		return log_error_errno(-errno, "VM %s, disk %s: cannot open %s", s->p->vm, d->name,
				       d->new_path);
	}
	int r = agent_fp_seal(fd);
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(d->new_path, d->fp_path) < 0)
		r = -errno;
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot commit %s", s->p->vm, d->name,
				       d->new_path);
	return 0;
}

/* ---- disks ---- */

static int disk_open(struct scan *s, struct disk *d)
{
	d->fd = open(d->path, O_RDONLY | O_CLOEXEC);
	if (d->fd < 0)
		return log_error_errno(-errno, "VM %s: cannot open disk %s (%s)", s->p->vm, d->name,
				       d->path);
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return log_error_errno(-errno, "VM %s: cannot stat disk %s (%s)", s->p->vm, d->name,
				       d->path);
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(d->fd, BLKGETSIZE64, &sz) < 0)
			return log_error_errno(-errno, "VM %s: cannot get the size of disk %s (%s)",
					       s->p->vm, d->name, d->path);
		d->size = sz;
	} else if (S_ISREG(st.st_mode)) {
		d->size = (uint64_t)st.st_size;
	} else {
		return log_error_errno(-EINVAL,
				       "VM %s: disk %s (%s) is neither a regular file "
				       "nor a block device",
				       s->p->vm, d->name, d->path);
	}
	if (d->size == 0)
		return log_error_errno(-EINVAL, "VM %s: disk %s (%s) is empty", s->p->vm, d->name,
				       d->path);
	if (d->size > FERRY_DISK_SIZE_MAX)
		return log_error_errno(-EFBIG,
				       "VM %s: disk %s (%s) is larger than the %" PRIu64
				       " bytes a replicated disk may be",
				       s->p->vm, d->name, d->path, FERRY_DISK_SIZE_MAX);
	d->aligned = round_up_block(d->size);
	d->nblocks = d->aligned / BLOCK;
	/* Advice only; a failure changes nothing. */
	(void)posix_fadvise(d->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return 0;
}

static int size_changed(struct scan *s, const struct disk *d, uint64_t was)
{
	log_error("VM %s: disk %s (%s) changed size from %" PRIu64 " to %" PRIu64
		  " bytes since the last cycle; resizing a replicated disk is not supported yet",
		  s->p->vm, d->name, d->path, was, d->size);
	return -EINVAL;
}

/* ---- segments ---- */

static int writer_start(struct scan *s)
{
	/* While the segment before is still being encoded, prev is a stand-in
	 * (any non-null id); the shipper sets the real one before encoding. */
	static const struct ferry_id stand_in = { .b = { 1 } };
	const struct ferry_id *prev = s->pr.next_seq == 1 ? NULL :
				      s->prev_pending     ? &stand_in :
							    &s->pr.prev;
	if (!s->w) {
		pthread_mutex_lock(&s->sh.lock);
		if (s->sh.nspare > 0)
			s->w = s->sh.spare[--s->sh.nspare];
		pthread_mutex_unlock(&s->sh.lock);
	}
	int r = s->w ? ferry_segment_writer_reset(s->w, s->pr.next_seq, prev) :
		       ferry_segment_writer_new(s->p->vm, s->pr.next_seq, prev, &s->w);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot start segment %" PRIu64, s->p->vm,
				       s->pr.next_seq);
	ferry_segment_writer_set_workers(s->w, s->p->compress_workers);
	if (s->p->chunk_size) {
		r = ferry_segment_writer_set_chunking(s->w, s->p->chunk_size);
		if (r < 0)
			return log_error_errno(r, "VM %s: unusable chunk size %" PRIu32, s->p->vm,
					       s->p->chunk_size);
	}
	/* The replicator learns disks from the segment itself: every segment
	 * declares all of them so that each one stands alone. */
	for (size_t i = 0; i < s->ndisks; i++) {
		r = ferry_segment_writer_add_disk(s->w, (uint16_t)i, s->disks[i].name,
						  s->disks[i].size);
		if (r < 0)
			return log_error_errno(r, "VM %s: cannot declare disk %s", s->p->vm,
					       s->disks[i].name);
	}
	s->w_payload = 0;
	s->w_data_bytes = 0;
	return 0;
}

/* Every pending fingerprint file, not only those written since the last
 * segment: the shipper syncs the others only when it records progress,
 * which it may have skipped (at most once a second). */
static int sync_pending(struct scan *s)
{
	for (size_t i = 0; i < s->ndisks; i++) {
		struct disk *d = &s->disks[i];
		if (d->new_fd < 0)
			continue;
		if (fdatasync(d->new_fd) < 0)
			return log_error_errno(-errno, "VM %s, disk %s: cannot sync %s", s->p->vm,
					       d->name, d->new_path);
		d->dirty = 0;
	}
	return 0;
}

static void job_free(struct job *j)
{
	if (j) {
		ferry_segment_writer_free(j->w);
		free(j->buf);
		free(j);
	}
}

/* Encodes the job's segment, chained after the one encoded before it
 * (prev: its digest); called with the lock held, drops it meanwhile. */
static int job_encode(struct scan *s, struct job *j, const struct ferry_id *prev)
{
	struct shipper *sh = &s->sh;
	pthread_mutex_unlock(&sh->lock);
	int r = j->chained ? ferry_segment_writer_set_prev(j->w, prev) : 0;
	struct ferry_segment_info info;
	if (r >= 0)
		r = ferry_segment_writer_finish(j->w, &j->buf, &j->len, &info);
	if (r < 0)
		log_error_errno(r, "VM %s: cannot encode segment %" PRIu64, s->p->vm, j->seq);
	else
		j->pr.prev = info.digest;
	pthread_mutex_lock(&sh->lock);
	/* The writer goes back to the scan for its next segment. */
	if (r >= 0 && sh->nspare < ARRAY_SIZE(sh->spare)) {
		sh->spare[sh->nspare++] = j->w;
		j->w = NULL;
	}
	return r;
}

/* Compression is most of the agent's CPU: this thread encodes queued
 * segments in order, ahead of the shipper, while the scan reads on and the
 * shipper waits for the cache. */
static void *encoder_main(void *userdata)
{
	struct scan *s = userdata;
	struct shipper *sh = &s->sh;
	pthread_mutex_lock(&sh->lock);
	for (;;) {
		while (!sh->to_encode && !sh->quit)
			pthread_cond_wait(&sh->cond, &sh->lock);
		struct job *j = sh->to_encode;
		if (!j)
			break;
		sh->to_encode = j->next;
		/* After a failure the shipper drops the rest: skip the work. */
		if (!sh->error) {
			struct ferry_id prev = sh->encoded_digest;
			j->encode_error = job_encode(s, j, &prev);
			if (j->encode_error >= 0)
				sh->encoded_digest = j->pr.prev;
		}
		j->encoded = 1;
		pthread_cond_broadcast(&sh->cond);
	}
	pthread_mutex_unlock(&sh->lock);
	return NULL;
}

static int job_run(struct scan *s, struct job *j)
{
	int r = j->encode_error;
	if (r < 0)
		return r;
	r = ferry_cache_put_segment(s->p->cache, s->p->vm, j->seq, j->buf, j->len);
	if (r == -EEXIST) {
		log_warning("VM %s: segment %" PRIu64 " is already in the cache; "
			    "resynchronizing the sequence",
			    s->p->vm, j->seq);
		return r;
	}
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot put segment %" PRIu64 " into %s", s->p->vm,
				       j->seq, ferry_cache_url(s->p->cache));
	log_debug("VM %s: segment %" PRIu64 ": %zu bytes in the cache", s->p->vm, j->seq, j->len);

	struct shipper *sh = &s->sh;
	for (size_t i = 0; i < j->nfds; i++) {
		size_t k = 0;
		while (k < sh->nunsynced && sh->unsynced[k] != j->fds[i])
			k++;
		if (k < sh->nunsynced)
			continue;
		if (sh->nunsynced < ARRAY_SIZE(sh->unsynced))
			sh->unsynced[sh->nunsynced++] = j->fds[i];
		else
			sh->unsynced_overflow = 1;
	}
	int64_t now = ferry_mono_ns();
	if (!j->must_record && now - sh->last_record_ns < RECORD_EVERY_NS)
		return 0;
	for (size_t i = 0; i < sh->nunsynced; i++)
		if (fdatasync(sh->unsynced[i]) < 0)
			return log_error_errno(-errno, "VM %s: cannot sync pending fingerprints",
					       s->p->vm);
	if (sh->unsynced_overflow)
		for (size_t i = 0; i < s->ndisks; i++)
			if (s->disks[i].new_fd >= 0 && fdatasync(s->disks[i].new_fd) < 0)
				return log_error_errno(-errno,
						       "VM %s: cannot sync pending fingerprints",
						       s->p->vm);
	sh->nunsynced = 0;
	sh->unsynced_overflow = 0;
	sh->last_record_ns = now;
	return progress_write(s, &j->pr);
}

static void *shipper_main(void *userdata)
{
	struct scan *s = userdata;
	struct shipper *sh = &s->sh;
	pthread_mutex_lock(&sh->lock);
	for (;;) {
		while (!(sh->head && sh->head->encoded) && !(sh->quit && !sh->head))
			pthread_cond_wait(&sh->cond, &sh->lock);
		if (!sh->head)
			break;
		struct job *j = sh->head;
		sh->head = j->next;
		if (!sh->head)
			sh->tail = NULL;
		int skip = sh->error != 0;
		pthread_mutex_unlock(&sh->lock);

		int r = skip ? 0 : job_run(s, j);

		pthread_mutex_lock(&sh->lock);
		if (r < 0 && !sh->error)
			sh->error = r;
		else if (!skip) {
			sh->shipped_bytes += j->data_bytes;
			sh->segments++;
			sh->last_seq = j->seq;
			sh->last_digest = j->pr.prev;
		}
		sh->pending--;
		pthread_cond_broadcast(&sh->cond);
		job_free(j);
	}
	pthread_mutex_unlock(&sh->lock);
	return NULL;
}

static int shipper_start(struct scan *s)
{
	struct shipper *sh = &s->sh;
	pthread_mutex_init(&sh->lock, NULL);
	pthread_cond_init(&sh->cond, NULL);
	int r = -pthread_create(&sh->encoder, NULL, encoder_main, s);
	if (r < 0)
		return log_error_errno(r, "cannot start the encoding thread");
	r = -pthread_create(&sh->thread, NULL, shipper_main, s);
	if (r < 0) {
		pthread_mutex_lock(&sh->lock);
		sh->quit = 1;
		pthread_cond_broadcast(&sh->cond);
		pthread_mutex_unlock(&sh->lock);
		pthread_join(sh->encoder, NULL);
		return log_error_errno(r, "cannot start the shipping thread");
	}
	sh->started = 1;
	return 0;
}

static void shipper_stop(struct scan *s)
{
	struct shipper *sh = &s->sh;
	if (!sh->started)
		return;
	pthread_mutex_lock(&sh->lock);
	sh->quit = 1;
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);
	pthread_join(sh->thread, NULL);
	pthread_join(sh->encoder, NULL);
	pthread_mutex_destroy(&sh->lock);
	pthread_cond_destroy(&sh->cond);
	sh->started = 0;
}

/* Waits until at most `depth` jobs are pending; returns (and clears) the
 * first failure, after the jobs queued behind it have been dropped. */
static int shipper_wait(struct scan *s, size_t depth)
{
	struct shipper *sh = &s->sh;
	pthread_mutex_lock(&sh->lock);
	while (sh->pending > depth || (sh->error && sh->pending > 0))
		pthread_cond_wait(&sh->cond, &sh->lock);
	int r = sh->error;
	sh->error = 0;
	s->st.shipped_bytes = sh->shipped_bytes;
	s->st.segments = sh->segments;
	if (sh->last_seq)
		s->st.seq = sh->last_seq;
	/* Everything shipped: the chain head is known again. */
	if (r >= 0 && sh->pending == 0 && s->prev_pending && sh->last_seq + 1 == s->pr.next_seq) {
		s->pr.prev = sh->last_digest;
		s->prev_pending = 0;
	}
	pthread_mutex_unlock(&sh->lock);
	return r;
}

/* Hands the open segment to the shipper; once it is put, everything before
 * (disk, pos) is safe. -EEXIST if that seq is taken (the caller then
 * resynchronizes); errors of earlier segments surface here too. */
static int ship(struct scan *s, size_t disk, uint64_t pos, enum pstate state)
{
	size_t nfds = 0;
	for (size_t i = 0; i < s->ndisks; i++)
		nfds += s->disks[i].new_fd >= 0 && s->disks[i].dirty;
	struct job *j = calloc(1, sizeof(*j) + nfds * sizeof(int));
	if (!j)
		return log_error_errno(-ENOMEM, "out of memory");
	/* The shipper encodes it, so the scan goes on meanwhile. */
	j->w = TAKE_PTR(s->w);
	j->chained = s->prev_pending;
	for (size_t i = 0; i < s->ndisks; i++)
		if (s->disks[i].new_fd >= 0 && s->disks[i].dirty) {
			j->fds[j->nfds++] = s->disks[i].new_fd;
			s->disks[i].dirty = 0;
		}
	j->seq = s->pr.next_seq;
	j->data_bytes = s->w_data_bytes;
	j->must_record = state != P_SCANNING || (s->p->stop && *s->p->stop);

	/* From here on the scan builds on this segment; the durable state
	 * catches up when the shipper is done with it (and sets prev, the
	 * digest, in j->pr and, once everything is shipped, in s->pr). */
	s->pr.next_seq = j->seq + 1;
	s->prev_pending = 1;
	s->pr.state = state;
	s->pr.disk = disk;
	s->pr.offset = pos;
	s->pr.cycle_shipped += s->w_data_bytes;
	s->pr.total_shipped += s->w_data_bytes;
	s->pr.cycle_segments++;
	j->pr = s->pr;

	/* Two segments in flight (one being encoded, one being put) while the
	 * next one is built: compressing, putting and scanning overlap. */
	int r = shipper_wait(s, 2);
	if (r < 0) {
		job_free(j);
		return r;
	}
	struct shipper *sh = &s->sh;
	pthread_mutex_lock(&sh->lock);
	if (sh->tail)
		sh->tail->next = j;
	else
		sh->head = j;
	sh->tail = j;
	if (!sh->to_encode)
		sh->to_encode = j;
	sh->pending++;
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);

	if (state == P_SCANNING)
		return writer_start(s);
	return 0;
}

static int run_flush(struct scan *s, uint16_t disk)
{
	struct run *run = &s->run;
	int r = 0;
	if (run->type == RUN_DATA) {
		r = ferry_segment_writer_add_data(s->w, disk, run->start, run->data, run->len);
		s->w_data_bytes += run->len;
	} else if (run->type == RUN_ZERO) {
		r = ferry_segment_writer_add_zero(s->w, disk, run->start, run->len);
		s->st.zeroed_bytes += run->len;
	}
	if (run->type != RUN_NONE)
		s->w_payload++;
	run->type = RUN_NONE;
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot add a record at %" PRIu64,
				       s->p->vm, s->disks[disk].name, run->start);
	return 0;
}

static int run_add(struct scan *s, uint16_t disk, enum run_type type, uint64_t off,
		   const uint8_t *data)
{
	struct run *run = &s->run;
	if (run->type == type && run->start + run->len == off) {
		run->len += BLOCK;
		return 0;
	}
	int r = run_flush(s, disk);
	if (r < 0)
		return r;
	if (type != RUN_NONE)
		*run = (struct run){ .type = type, .start = off, .len = BLOCK, .data = data };
	return 0;
}

static void report(struct scan *s, size_t disk, uint64_t pos)
{
	if (!s->p->progress)
		return;
	uint64_t done = pos;
	for (size_t i = 0; i < disk; i++)
		done += s->disks[i].aligned;
	s->p->progress(s->p->userdata, done, s->total);
}

/* Called between regions: cut a segment when it is big enough, and stop
 * cleanly when asked. Returns 1 when stopping. */
static int checkpoint(struct scan *s, size_t disk, uint64_t pos)
{
	report(s, disk, pos);
	int stop = s->p->stop && *s->p->stop;
	int full = ferry_segment_writer_size(s->w) >= SEGMENT_CUT;
	if (full || stop) {
		/* A zero run may still be open; it ends at pos. */
		int r = run_flush(s, (uint16_t)disk);
		if (r < 0)
			return r;
	}
	if (full || (stop && s->w_payload > 0)) {
		int r = ship(s, disk, pos, P_SCANNING);
		if (r < 0)
			return r;
		if (stop) {
			r = shipper_wait(s, 0);
			if (r < 0)
				return r;
		}
	} else if (stop) {
		/* Nothing changed since the last segment: the position alone
		 * can be recorded, once the fingerprints behind it are safe. */
		int r = shipper_wait(s, 0);
		if (r < 0)
			return r;
		r = sync_pending(s);
		if (r < 0)
			return r;
		s->pr.disk = disk;
		s->pr.offset = pos;
		r = progress_write(s, &s->pr);
		if (r < 0)
			return r;
	}
	return stop;
}

/* Reads entries [from, from+n) of the committed fingerprints into oldfp. */
static int read_old(struct scan *s, struct disk *d, uint64_t from, size_t n)
{
	int r = ferry_pread_all(d->old_fd, s->oldfp, n * FP_ENTRY, fp_pos(from));
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot read %s", s->p->vm, d->name,
				       d->fp_path);
	return 0;
}

/* A hole [a, b) of the disk: free, unless the last cycle saw data there. */
static int scan_hole(struct scan *s, size_t di, uint64_t a, uint64_t b)
{
	struct disk *d = &s->disks[di];
	uint16_t disk = (uint16_t)di;
	int r;

	if (d->old_fd < 0) {
		/* Nothing known about the target: say explicitly that it is
		 * zero, so that a resync over stale content is still exact. */
		if (s->run.type == RUN_ZERO && s->run.start + s->run.len == a) {
			s->run.len += b - a;
			return 0;
		}
		r = run_flush(s, disk);
		if (r < 0)
			return r;
		s->run = (struct run){ .type = RUN_ZERO, .start = a, .len = b - a };
		return 0;
	}

	uint64_t blk = a / BLOCK, end = b / BLOCK;
	while (blk < end) {
		/* The committed file is sparse where the disk was: jump over
		 * its own holes instead of reading zeros. */
		off_t q = lseek(d->old_fd, fp_pos(blk), SEEK_DATA);
		if (q < 0 && errno == ENXIO)
			break;
		if (q >= 0 && (uint64_t)q > (uint64_t)fp_pos(blk)) {
			uint64_t nb = ((uint64_t)q - FP_HDR_SIZE) / FP_ENTRY;
			if (nb >= end)
				break;
			if (nb > blk) {
				r = run_flush(s, disk);
				if (r < 0)
					return r;
				blk = nb;
			}
		}
		size_t n = (size_t)MIN((uint64_t)HOLE_FPS, end - blk);
		r = read_old(s, d, blk, n);
		if (r < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			enum run_type t = fp_is_zero(s->oldfp + i * FP_ENTRY) ? RUN_NONE : RUN_ZERO;
			r = run_add(s, disk, t, (blk + i) * BLOCK, NULL);
			if (r < 0)
				return r;
		}
		blk += n;
	}
	return 0;
}

static int read_disk(struct scan *s, struct disk *d, uint64_t pos, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(d->fd, s->buf + got, len - got, (off_t)(pos + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return log_error_errno(-errno,
					       "VM %s: cannot read disk %s (%s) at %" PRIu64,
					       s->p->vm, d->name, d->path, pos + got);
		}
		if (n == 0)
			break; /* end of disk: the partial last block reads as zeros */
		got += (size_t)n;
	}
	memset(s->buf + got, 0, len - got);
	return 0;
}

/* One read of data region [pos, pos+len), len <= READ_SIZE. */
static int scan_chunk(struct scan *s, size_t di, uint64_t pos, size_t len)
{
	struct disk *d = &s->disks[di];
	uint16_t disk = (uint16_t)di;
	size_t nb = len / BLOCK;
	uint64_t b0 = pos / BLOCK;

	int r = read_disk(s, d, pos, len);
	if (r < 0)
		return r;
	s->st.scanned_bytes += len;

	int any = 0;
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *blk = s->buf + i * BLOCK;
		uint8_t *e = s->newfp + i * FP_ENTRY;
		if (block_is_zero(blk)) {
			memset(e, 0, FP_ENTRY);
			continue;
		}
		struct ferry_fp fp;
		ferry_fingerprint(blk, BLOCK, &fp);
		/* The all-zero value means "zero block"; keep data off it. */
		if (fp.lo == 0 && fp.hi == 0)
			fp.lo = 1;
		put_fp(e, &fp);
		any = 1;
	}
	/* Pending entries start zeroed (sparse), so all-zero reads write nothing. */
	if (any) {
		r = ferry_pwrite_all(d->new_fd, s->newfp, nb * FP_ENTRY, fp_pos(b0));
		if (r < 0)
			return log_error_errno(r, "VM %s, disk %s: cannot write %s", s->p->vm,
					       d->name, d->new_path);
		d->dirty = 1;
	}

	if (d->old_fd >= 0) {
		r = read_old(s, d, b0, nb);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *e = s->newfp + i * FP_ENTRY;
		int changed = d->old_fd < 0 || memcmp(e, s->oldfp + i * FP_ENTRY, FP_ENTRY) != 0;
		enum run_type t = !changed ? RUN_NONE : fp_is_zero(e) ? RUN_ZERO : RUN_DATA;
		r = run_add(s, disk, t, pos + i * BLOCK, s->buf + i * BLOCK);
		if (r < 0)
			return r;
	}
	/* The buffer is reused by the next read: no data run may outlive it;
	 * a zero run may go on into the next region. */
	return s->run.type == RUN_DATA ? run_flush(s, disk) : 0;
}

/* Scans disk di from pos to its end. Returns 1 when stopped. */
static int scan_disk(struct scan *s, size_t di, uint64_t pos)
{
	struct disk *d = &s->disks[di];
	int r;

	while (pos < d->aligned) {
		uint64_t data = pos, hole = d->aligned;
		if (!d->no_seek_data) {
			off_t q = lseek(d->fd, (off_t)pos, SEEK_DATA);
			if (q < 0 && errno == ENXIO)
				data = d->aligned;
			else if (q < 0 && (errno == EINVAL || errno == EOPNOTSUPP))
				d->no_seek_data = 1;
			else if (q < 0)
				return log_error_errno(-errno, "VM %s: cannot seek disk %s (%s)",
						       s->p->vm, d->name, d->path);
			else
				data = MIN((uint64_t)q / BLOCK * BLOCK, d->aligned);
			data = MAX(data, pos);
		}
		if (data > pos) {
			r = scan_hole(s, di, pos, data);
			if (r < 0)
				return r;
			pos = data;
			r = checkpoint(s, di, pos);
			if (r != 0)
				return r;
			continue;
		}
		if (!d->no_seek_data) {
			off_t q = lseek(d->fd, (off_t)pos, SEEK_HOLE);
			if (q < 0 && errno != ENXIO)
				return log_error_errno(-errno, "VM %s: cannot seek disk %s (%s)",
						       s->p->vm, d->name, d->path);
			hole = q < 0 ? d->aligned : MIN(round_up_block((uint64_t)q), d->aligned);
			if (hole <= pos)
				hole = MIN(pos + BLOCK, d->aligned);
		}
		while (pos < hole) {
			/* Reads stay aligned to READ_SIZE on the disk, so that
			 * records line up however the regions fall. */
			uint64_t end = MIN(hole, (pos / READ_SIZE + 1) * READ_SIZE);
			r = scan_chunk(s, di, pos, (size_t)(end - pos));
			if (r < 0)
				return r;
			pos = end;
			r = checkpoint(s, di, pos);
			if (r != 0)
				return r;
		}
	}
	return run_flush(s, (uint16_t)di);
}

/* ---- the cycle ---- */

/* Links onto whatever the cache knows beyond the progress file: a segment
 * put just before a crash (progress not yet written), or the replicator's
 * acknowledgement. A segment of the running cycle that holds the marker
 * means the cycle was shipped whole and only needs committing. */
static int reconcile(struct scan *s)
{
	struct ferry_chain_head h;
	int r = ferry_cache_chain_head(s->p->cache, s->p->vm, s->pr.next_seq, &h);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot find where its segment chain stands in %s",
				       s->p->vm, ferry_cache_url(s->p->cache));
	if (h.ack.seq + 1 > s->pr.next_seq) {
		log_info("VM %s: the replicator acknowledged segment %" PRIu64
			 " beyond the local state; continuing after it",
			 s->p->vm, h.ack.seq);
		s->pr.next_seq = h.ack.seq + 1;
		s->pr.prev = h.ack.digest;
	}
	if (h.top_seq + 1 <= s->pr.next_seq)
		return 0;
	log_info("VM %s: the cache holds segment %" PRIu64 " beyond the local state; "
		 "continuing after it",
		 s->p->vm, h.top_seq);
	s->pr.next_seq = h.top_seq + 1;
	s->pr.prev = h.top_digest;
	if (s->pr.state == P_SCANNING && h.top_marker) {
		s->pr.state = P_COMMITTING;
		s->pr.marker_time_ns = h.top_marker_ns;
		s->pr.cycle_segments++;
		s->st.seq = h.top_seq;
	}
	return 0;
}

static int commit(struct scan *s)
{
	int r;
	for (size_t i = 0; i < s->ndisks; i++) {
		r = fp_commit(s, &s->disks[i]);
		if (r < 0)
			return r;
	}
	r = ferry_fsync_parent(s->progress_path);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot sync %s", s->p->vm, s->p->state_dir);

	s->st.cycle = s->pr.cycle;
	s->st.seq = s->pr.next_seq - 1;
	s->st.marker_time_ns = s->pr.marker_time_ns;
	s->st.cycle_shipped_bytes = s->pr.cycle_shipped;
	s->st.cycle_segments = s->pr.cycle_segments;
	s->st.total_shipped_bytes = s->pr.total_shipped;

	s->pr.state = P_IDLE;
	s->pr.cycle++;
	s->pr.disk = 0;
	s->pr.offset = 0;
	s->pr.cycle_shipped = 0;
	s->pr.cycle_segments = 0;
	return progress_write(s, &s->pr);
}

/* Makes the pending files of disks before the resume position usable, or
 * rewinds the cycle to its start when they are not. */
static int prepare_resume(struct scan *s)
{
	if (s->pr.disk > s->ndisks ||
	    (s->pr.disk < s->ndisks && s->pr.offset > s->disks[s->pr.disk].aligned) ||
	    s->pr.offset % BLOCK) {
		log_warning("VM %s: the progress file points outside the disks; restarting "
			    "the cycle",
			    s->p->vm);
		s->pr.disk = 0;
		s->pr.offset = 0;
		return 0;
	}
	if (s->pr.disk < s->ndisks && s->pr.offset == s->disks[s->pr.disk].aligned) {
		s->pr.disk++;
		s->pr.offset = 0;
	}
	for (size_t i = 0; i <= s->pr.disk && i < s->ndisks; i++) {
		struct disk *d = &s->disks[i];
		uint64_t valid = i < s->pr.disk ? d->nblocks : s->pr.offset / BLOCK;
		if (i == s->pr.disk && valid == 0)
			break;
		int r = fp_reopen_new(s, d, valid);
		if (r == -ESTALE) {
			log_warning("VM %s, disk %s: pending fingerprints are missing or damaged; "
				    "restarting the cycle",
				    s->p->vm, d->name);
			s->pr.disk = 0;
			s->pr.offset = 0;
			return 0;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Scans from the recorded position to the end and ships the marker.
 * 1: complete (progress says committing), 0: stopped, -EEXIST, -errno. */
static int scan_from(struct scan *s)
{
	int r = prepare_resume(s);
	if (r < 0)
		return r;
	uint64_t done = s->pr.offset;
	for (size_t i = 0; i < s->pr.disk && i < s->ndisks; i++)
		done += s->disks[i].aligned;
	s->st.resumed_from = done;
	if (done > 0)
		log_info("VM %s: resuming cycle %" PRIu64 " at disk %s, offset %" PRIu64, s->p->vm,
			 s->pr.cycle, s->pr.disk < s->ndisks ? s->disks[s->pr.disk].name : "(end)",
			 s->pr.offset);

	r = writer_start(s);
	if (r < 0)
		return r;
	for (size_t i = s->pr.disk; i < s->ndisks; i++) {
		uint64_t pos = i == s->pr.disk ? s->pr.offset : 0;
		if (pos == 0) {
			r = fp_create_new(s, &s->disks[i]);
			if (r < 0)
				return r;
		}
		r = scan_disk(s, i, pos);
		if (r != 0)
			return r < 0 ? r : 0;
	}

	/* The cut is when the scan finished reading: every block shipped
	 * is at least that old. */
	s->pr.marker_time_ns = ferry_now_ns();
	r = ferry_segment_writer_add_marker(s->w, FERRY_CONSISTENCY_CRASH, s->pr.marker_time_ns);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot add the consistency marker", s->p->vm);
	size_t last = s->ndisks - 1;
	r = ship(s, last, s->disks[last].aligned, P_COMMITTING);
	if (r < 0)
		return r;
	r = shipper_wait(s, 0);
	if (r < 0)
		return r;
	return 1;
}

static void scan_done(struct scan *s)
{
	shipper_stop(s);
	ferry_segment_writer_free(s->w);
	for (size_t i = 0; i < s->sh.nspare; i++)
		ferry_segment_writer_free(s->sh.spare[i]);
	for (size_t i = 0; s->disks && i < s->ndisks; i++) {
		struct disk *d = &s->disks[i];
		if (d->fd >= 0)
			close(d->fd);
		if (d->old_fd >= 0)
			close(d->old_fd);
		if (d->new_fd >= 0)
			close(d->new_fd);
		free(d->fp_path);
		free(d->new_path);
	}
	free(s->disks);
	free(s->buf);
	free(s->progress_path);
	free(s->disks_list);
}

/* What the progress file is checked against: its path and the disk list. */
static int state_names(struct scan *s, const struct agent_scan_params *p)
{
	s->p = p;
	if (p->ndisks == 0 || p->ndisks > 256)
		return log_error_errno(-EINVAL, "VM %s: a VM has 1 to 256 disks", p->vm);
	if (asprintf(&s->progress_path, "%s/progress", p->state_dir) < 0)
		return log_error_errno(-ENOMEM, "out of memory");
	size_t listlen = 1;
	for (size_t i = 0; i < p->ndisks; i++)
		listlen += strlen(p->disks[i].name) + 1;
	s->disks_list = calloc(1, listlen);
	if (!s->disks_list)
		return log_error_errno(-ENOMEM, "out of memory");
	for (size_t i = 0; i < p->ndisks; i++) {
		if (i > 0)
			strcat(s->disks_list, ",");
		strcat(s->disks_list, p->disks[i].name);
	}
	return 0;
}

static int scan_init(struct scan *s, const struct agent_scan_params *p)
{
	int r = state_names(s, p);
	if (r < 0)
		return r;
	s->buf = aligned_alloc(BLOCK, READ_SIZE);
	s->disks = calloc(p->ndisks, sizeof(*s->disks));
	if (!s->buf || !s->disks)
		return log_error_errno(-ENOMEM, "out of memory");
	s->ndisks = p->ndisks;
	for (size_t i = 0; i < p->ndisks; i++) {
		struct disk *d = &s->disks[i];
		d->name = p->disks[i].name;
		d->path = p->disks[i].path;
		d->fd = d->old_fd = d->new_fd = -1;
		if (asprintf(&d->fp_path, "%s/%s.fp", p->state_dir, d->name) < 0 ||
		    asprintf(&d->new_path, "%s/%s.fp.new", p->state_dir, d->name) < 0)
			return log_error_errno(-ENOMEM, "out of memory");
	}
	return shipper_start(s);
}

static int cycle(struct scan *s)
{
	int r = progress_load(s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->ndisks; i++) {
		struct disk *d = &s->disks[i];
		uint64_t was;
		r = disk_open(s, d);
		if (r < 0)
			return r;
		r = fp_open_old(s, d, &was);
		if (r < 0)
			return r;
		if (was != UINT64_MAX && was != d->size)
			return size_changed(s, d, was);
		s->total += d->aligned;
	}
	s->st.disk_bytes = s->total;

	/* A crash during a commit: the marker is in the cache, finish it. */
	if (s->pr.state == P_COMMITTING) {
		r = commit(s);
		return r < 0 ? r : 1;
	}

	r = reconcile(s);
	if (r < 0)
		return r;
	if (s->pr.state == P_IDLE) {
		s->pr.state = P_SCANNING;
		s->pr.disk = 0;
		s->pr.offset = 0;
		s->pr.cycle_shipped = 0;
		s->pr.cycle_segments = 0;
		r = progress_write(s, &s->pr);
		if (r < 0)
			return r;
	}
	for (int attempt = 0; s->pr.state == P_SCANNING; attempt++) {
		r = scan_from(s);
		if (r == 0)
			return 0;
		if (r != -EEXIST && r < 0)
			return r;
		if (r == -EEXIST) {
			if (attempt >= 3)
				return log_error_errno(r,
						       "VM %s: another writer keeps putting "
						       "segments into %s; is a second agent "
						       "running for this VM?",
						       s->p->vm, ferry_cache_url(s->p->cache));
			/* Someone else holds that seq: link after it and redo
			 * the work since the last durable position. */
			r = progress_load(s);
			if (r >= 0)
				r = reconcile(s);
			if (r < 0)
				return r;
		}
	}
	r = commit(s);
	if (r < 0)
		return r;
	return 1;
}

int agent_scan_cycle(const struct agent_scan_params *p, struct agent_scan_stats *ret)
{
	struct scan s = { 0 };
	s.st.started_ns = ferry_now_ns();
	int r = scan_init(&s, p);
	if (r >= 0)
		r = cycle(&s);
	s.st.finished_ns = ferry_now_ns();
	if (r >= 0) {
		if (r == 0) {
			s.st.cycle = s.pr.cycle;
			s.st.cycle_shipped_bytes = s.pr.cycle_shipped;
			s.st.cycle_segments = s.pr.cycle_segments;
			s.st.total_shipped_bytes = s.pr.total_shipped;
		}
		*ret = s.st;
	}
	scan_done(&s);
	return r;
}

int agent_scan_head(const struct agent_scan_params *p, uint64_t *ret)
{
	struct scan s = { 0 };
	int r = state_names(&s, p);
	if (r >= 0 && access(s.progress_path, F_OK) < 0)
		r = -errno;
	if (r >= 0)
		r = progress_load(&s);
	if (r >= 0)
		*ret = s.pr.next_seq - 1;
	free(s.progress_path);
	free(s.disks_list);
	return r;
}

int agent_scan_rebase(const struct agent_scan_params *p, uint64_t next_seq,
		      const struct ferry_id *prev)
{
	struct scan s = { 0 };
	int r = state_names(&s, p);
	/* A damaged progress file is replaced: the resync is the fresh start
	 * its message asks for. */
	if (r >= 0 && progress_load(&s) < 0)
		s.pr = (struct progress){ .cycle = 1 };
	if (r >= 0) {
		s.pr.state = P_IDLE;
		s.pr.next_seq = next_seq;
		s.pr.prev = *prev;
		s.pr.disk = s.pr.offset = 0;
		s.pr.cycle_shipped = s.pr.cycle_segments = 0;
		r = progress_write(&s, &s.pr);
	}
	free(s.progress_path);
	free(s.disks_list);
	return r;
}
