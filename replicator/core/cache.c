/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache: segments travelling from agent to replicator and the acks
 * travelling back, as named blobs. Segments are created exclusively and
 * never rewritten, so a seq names exactly one segment for its whole life;
 * the ack, and the agent's status beside it, are small checksummed records
 * replaced whole. The protocol both
 * sides follow around it (and after a crash at any step) is in
 * docs/format/cache.md.
 */
#include "ferry/cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cache-internal.h"
#include "ferry/blobs.h"
#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/util.h"

#define ACK_MAGIC "FERRYACK"
#define ACK_MAJOR 1
#define ACK_MINOR 0

#define A_MAGIC 0
#define A_MAJOR 8
#define A_MINOR 10
#define A_LEN 12
#define A_SEQ 16
#define A_DIGEST 24
#define A_VMLEN 56
#define A_VM 57
#define A_SUM_SIZE FERRY_ID_SIZE

#define STATUS_MAGIC "FERRYSTA"
#define STATUS_MAJOR 1
/* 1.1 adds the message after the VM name; 1.2 the app-consistent and
 * progress fields after the message. */
#define STATUS_MINOR 2

#define S_MAGIC 0
#define S_MAJOR 8
#define S_MINOR 10
#define S_LEN 12
#define S_WRITTEN 16
#define S_CYCLE 24
#define S_SEQ 32
#define S_MARKER 40
#define S_STARTED 48
#define S_DURATION 56
#define S_SHIPPED 64
#define S_SEGMENTS 72
#define S_READ 80
#define S_WAITING 88
#define S_INTERVAL 96
#define S_ERROR 100
#define S_TRACKER 104
#define S_VMLEN 105
#define S_VM 106
#define S_SUM_SIZE FERRY_ID_SIZE
/* errno values are small; anything larger is not one. */
#define S_ERROR_MAX 4095
/* 1.2, from the end of the message: fixed fields, then the app message. */
#define S12_APP_ERROR 0
#define S12_APP_ATTEMPT 4
#define S12_APP_OK 12
#define S12_DONE 20
#define S12_TOTAL 28
#define S12_RATE 36
#define S12_APP_MSGLEN 44
#define S12_FIXED 46

struct ferry_cache {
	struct ferry_blobs *blobs;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free);

/* seq 0 means "nothing applied" and has no digest; a real segment always has one. */
static int ack_consistent(const struct ferry_ack *ack)
{
	return (ack->seq == 0) == !!ferry_id_is_null(&ack->digest);
}

int cache_ack_format(const char *vm, const struct ferry_ack *ack, void *buf, size_t size,
		     size_t *ret_len)
{
	if (!ferry_name_valid(vm) || !ack_consistent(ack))
		return -EINVAL;
	size_t n = strlen(vm), len = CACHE_ACK_LEN(n);
	if (size < len)
		return -ENOBUFS;
	uint8_t *b = buf;
	memset(b, 0, len);
	memcpy(b + A_MAGIC, ACK_MAGIC, 8);
	put_le16(b + A_MAJOR, ACK_MAJOR);
	put_le16(b + A_MINOR, ACK_MINOR);
	put_le32(b + A_LEN, (uint32_t)len);
	put_le64(b + A_SEQ, ack->seq);
	memcpy(b + A_DIGEST, ack->digest.b, FERRY_ID_SIZE);
	b[A_VMLEN] = (uint8_t)n;
	memcpy(b + A_VM, vm, n);
	struct ferry_id sum;
	ferry_sha256(b, len - A_SUM_SIZE, &sum);
	memcpy(b + len - A_SUM_SIZE, sum.b, A_SUM_SIZE);
	*ret_len = len;
	return 0;
}

int cache_ack_parse(const void *buf, size_t len, const char *vm, struct ferry_ack *ret)
{
	const uint8_t *b = buf;
	/* Magic, major, length and the trailing checksum are the envelope of
	 * every major version: damage is told apart from an unknown version. */
	if (!buf || len < CACHE_ACK_LEN(1) || len > CACHE_ACK_MAX)
		return -EBADMSG;
	if (memcmp(b + A_MAGIC, ACK_MAGIC, 8) != 0 || get_le32(b + A_LEN) != len)
		return -EBADMSG;
	struct ferry_id sum;
	ferry_sha256(b, len - A_SUM_SIZE, &sum);
	if (memcmp(sum.b, b + len - A_SUM_SIZE, A_SUM_SIZE) != 0)
		return -EBADMSG;
	if (get_le16(b + A_MAJOR) != ACK_MAJOR)
		return -EPROTONOSUPPORT;

	size_t n = b[A_VMLEN];
	/* A later minor version may add fields between the name and the sum. */
	if (n == 0 || n > 64 || A_VM + n > len - A_SUM_SIZE)
		return -EBADMSG;
	char name[65];
	memcpy(name, b + A_VM, n);
	name[n] = 0;
	if (strlen(name) != n || !ferry_name_valid(name))
		return -EBADMSG;
	/* An ack under another VM's name is as wrong as a damaged one. */
	if (vm && strcmp(vm, name) != 0)
		return -EBADMSG;

	struct ferry_ack a;
	a.seq = get_le64(b + A_SEQ);
	memcpy(a.digest.b, b + A_DIGEST, FERRY_ID_SIZE);
	if (!ack_consistent(&a))
		return -EBADMSG;
	*ret = a;
	return 0;
}

/* The rules of docs/format/cache.md a status must keep, on both sides. */
static int status_consistent(const struct ferry_agent_status *st)
{
	if (st->tracker == 0 || st->error < 0 || st->error > S_ERROR_MAX)
		return 0;
	size_t m = strnlen(st->message, sizeof(st->message));
	if (m > FERRY_STATUS_MESSAGE_MAX || (m > 0 && st->error == 0))
		return 0;
	if (st->written_ns < 0 || st->marker_ns < 0 || st->started_ns < 0 || st->duration_ns < 0)
		return 0;
	if (st->app_error < 0 || st->app_error > S_ERROR_MAX || st->app_attempt_ns < 0 ||
	    st->app_ok_ns < 0)
		return 0;
	size_t am = strnlen(st->app_message, sizeof(st->app_message));
	if (am > FERRY_STATUS_MESSAGE_MAX || (am > 0 && st->app_error == 0))
		return 0;
	if (st->progress_done_bytes > st->progress_total_bytes ||
	    (st->progress_total_bytes == 0 && st->progress_rate != 0))
		return 0;
	if (st->cycle == 0)
		return st->seq == 0 && st->marker_ns == 0 && st->started_ns == 0 &&
		       st->duration_ns == 0 && st->shipped_bytes == 0 && st->segments == 0 &&
		       st->read_bytes == 0;
	return st->seq > 0;
}

int cache_status_format(const char *vm, const struct ferry_agent_status *st, void *buf, size_t size,
			size_t *ret_len)
{
	if (!ferry_name_valid(vm) || !status_consistent(st))
		return -EINVAL;
	size_t n = strlen(vm), m = strlen(st->message), am = strlen(st->app_message);
	size_t len = CACHE_STATUS_LEN_12(n, m, am);
	if (size < len)
		return -ENOBUFS;
	uint8_t *b = buf;
	memset(b, 0, len);
	memcpy(b + S_MAGIC, STATUS_MAGIC, 8);
	put_le16(b + S_MAJOR, STATUS_MAJOR);
	put_le16(b + S_MINOR, STATUS_MINOR);
	put_le32(b + S_LEN, (uint32_t)len);
	put_le64(b + S_WRITTEN, (uint64_t)st->written_ns);
	put_le64(b + S_CYCLE, st->cycle);
	put_le64(b + S_SEQ, st->seq);
	put_le64(b + S_MARKER, (uint64_t)st->marker_ns);
	put_le64(b + S_STARTED, (uint64_t)st->started_ns);
	put_le64(b + S_DURATION, (uint64_t)st->duration_ns);
	put_le64(b + S_SHIPPED, st->shipped_bytes);
	put_le64(b + S_SEGMENTS, st->segments);
	put_le64(b + S_READ, st->read_bytes);
	put_le64(b + S_WAITING, st->source_waiting_bytes);
	put_le32(b + S_INTERVAL, st->interval_s);
	put_le32(b + S_ERROR, (uint32_t)st->error);
	b[S_TRACKER] = st->tracker;
	b[S_VMLEN] = (uint8_t)n;
	memcpy(b + S_VM, vm, n);
	put_le16(b + S_VM + n, (uint16_t)m);
	memcpy(b + S_VM + n + 2, st->message, m);
	uint8_t *e = b + S_VM + n + 2 + m;
	put_le32(e + S12_APP_ERROR, (uint32_t)st->app_error);
	put_le64(e + S12_APP_ATTEMPT, (uint64_t)st->app_attempt_ns);
	put_le64(e + S12_APP_OK, (uint64_t)st->app_ok_ns);
	put_le64(e + S12_DONE, st->progress_done_bytes);
	put_le64(e + S12_TOTAL, st->progress_total_bytes);
	put_le64(e + S12_RATE, st->progress_rate);
	put_le16(e + S12_APP_MSGLEN, (uint16_t)am);
	memcpy(e + S12_FIXED, st->app_message, am);
	struct ferry_id sum;
	ferry_sha256(b, len - S_SUM_SIZE, &sum);
	memcpy(b + len - S_SUM_SIZE, sum.b, S_SUM_SIZE);
	*ret_len = len;
	return 0;
}

/* A message (u16 length, then its bytes) at b + at, within end, into ret
 * (FERRY_STATUS_MESSAGE_MAX + 1 bytes); returns where it ends, or -EBADMSG
 * when it does not fit, is too long or holds a NUL. */
static ssize_t status_string_parse(const uint8_t *b, size_t at, size_t end, char *ret)
{
	if (at > end || end - at < 2)
		return -EBADMSG;
	size_t m = get_le16(b + at);
	if (m > FERRY_STATUS_MESSAGE_MAX || m > end - at - 2 || memchr(b + at + 2, 0, m))
		return -EBADMSG;
	memcpy(ret, b + at + 2, m);
	ret[m] = 0;
	return (ssize_t)(at + 2 + m);
}

/* The fields after the name: the message of a 1.1 status, and the app and
 * progress fields of a 1.2 one, into st ("" and zeros where a lower minor
 * has none). -EBADMSG when one does not fit. */
static int status_tail_parse(const uint8_t *b, size_t len, size_t name_end,
			     struct ferry_agent_status *st)
{
	uint16_t minor = get_le16(b + S_MINOR);
	size_t end = len - S_SUM_SIZE;
	st->message[0] = st->app_message[0] = 0;
	if (minor < 1)
		return 0;
	ssize_t at = status_string_parse(b, name_end, end, st->message);
	if (at < 0 || minor < 2)
		return at < 0 ? -EBADMSG : 0;
	if (end - (size_t)at < S12_FIXED)
		return -EBADMSG;
	const uint8_t *e = b + at;
	uint32_t app_error = get_le32(e + S12_APP_ERROR);
	if (app_error > S_ERROR_MAX)
		return -EBADMSG;
	st->app_error = (int)app_error;
	st->app_attempt_ns = (int64_t)get_le64(e + S12_APP_ATTEMPT);
	st->app_ok_ns = (int64_t)get_le64(e + S12_APP_OK);
	st->progress_done_bytes = get_le64(e + S12_DONE);
	st->progress_total_bytes = get_le64(e + S12_TOTAL);
	st->progress_rate = get_le64(e + S12_RATE);
	return status_string_parse(b, (size_t)at + S12_APP_MSGLEN, end, st->app_message) < 0 ?
		       -EBADMSG :
		       0;
}

int cache_status_parse(const void *buf, size_t len, const char *vm, struct ferry_agent_status *ret)
{
	const uint8_t *b = buf;
	/* The envelope is the ack's: magic, major, length and the trailing
	 * checksum stay where they are in every major version. */
	if (!buf || len < CACHE_STATUS_LEN(1) || len > CACHE_STATUS_MAX)
		return -EBADMSG;
	if (memcmp(b + S_MAGIC, STATUS_MAGIC, 8) != 0 || get_le32(b + S_LEN) != len)
		return -EBADMSG;
	struct ferry_id sum;
	ferry_sha256(b, len - S_SUM_SIZE, &sum);
	if (memcmp(sum.b, b + len - S_SUM_SIZE, S_SUM_SIZE) != 0)
		return -EBADMSG;
	if (get_le16(b + S_MAJOR) != STATUS_MAJOR)
		return -EPROTONOSUPPORT;

	size_t n = b[S_VMLEN];
	/* A later minor version may add fields between the name and the sum. */
	if (n == 0 || n > 64 || S_VM + n > len - S_SUM_SIZE)
		return -EBADMSG;
	char name[65];
	memcpy(name, b + S_VM, n);
	name[n] = 0;
	if (strlen(name) != n || !ferry_name_valid(name))
		return -EBADMSG;
	if (vm && strcmp(vm, name) != 0)
		return -EBADMSG;

	uint32_t error = get_le32(b + S_ERROR);
	if (error > S_ERROR_MAX)
		return -EBADMSG;
	struct ferry_agent_status st = {
		.tracker = b[S_TRACKER],
		.interval_s = get_le32(b + S_INTERVAL),
		.written_ns = (int64_t)get_le64(b + S_WRITTEN),
		.error = (int)error,
		.cycle = get_le64(b + S_CYCLE),
		.seq = get_le64(b + S_SEQ),
		.marker_ns = (int64_t)get_le64(b + S_MARKER),
		.started_ns = (int64_t)get_le64(b + S_STARTED),
		.duration_ns = (int64_t)get_le64(b + S_DURATION),
		.shipped_bytes = get_le64(b + S_SHIPPED),
		.segments = get_le64(b + S_SEGMENTS),
		.read_bytes = get_le64(b + S_READ),
		.source_waiting_bytes = get_le64(b + S_WAITING),
	};
	if (status_tail_parse(b, len, S_VM + n, &st) < 0 || !status_consistent(&st))
		return -EBADMSG;
	*ret = st;
	return 0;
}

int cache_segment_name(const char *vm, uint64_t seq, char *buf, size_t size)
{
	if (!ferry_name_valid(vm) || seq == 0)
		return -EINVAL;
	int n = snprintf(buf, size, "segments/%s/%016" PRIx64 ".seg", vm, seq);
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	return 0;
}

static int hexdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int cache_segment_name_parse(const char *name, const char *vm, uint64_t *ret_seq)
{
	size_t vl = strlen(vm);
	if (strncmp(name, "segments/", 9) != 0 || strncmp(name + 9, vm, vl) != 0 ||
	    name[9 + vl] != '/')
		return -EINVAL;
	const char *h = name + 9 + vl + 1;
	if (strlen(h) != 16 + 4 || strcmp(h + 16, ".seg") != 0)
		return -EINVAL;
	uint64_t seq = 0;
	for (size_t i = 0; i < 16; i++) {
		int d = hexdigit(h[i]);
		if (d < 0)
			return -EINVAL;
		seq = seq << 4 | (uint64_t)d;
	}
	if (seq == 0)
		return -EINVAL;
	*ret_seq = seq;
	return 0;
}

static int ack_name(const char *vm, char *buf, size_t size)
{
	if (!ferry_name_valid(vm))
		return -EINVAL;
	int n = snprintf(buf, size, "acks/%s.ack", vm);
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	return 0;
}

static int status_name(const char *vm, char *buf, size_t size)
{
	if (!ferry_name_valid(vm))
		return -EINVAL;
	int n = snprintf(buf, size, "status/%s.status", vm);
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	return 0;
}

int ferry_cache_open(const char *url, int create, struct ferry_cache **ret)
{
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	int r = ferry_blobs_open(url, create, &b);
	if (r < 0)
		return r;
	struct ferry_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->blobs = TAKE_PTR(b);
	*ret = c;
	return 0;
}

struct ferry_cache *ferry_cache_free(struct ferry_cache *c)
{
	if (c) {
		ferry_blobs_free(c->blobs);
		free(c);
	}
	return NULL;
}

struct ferry_blobs *cache_blobs(struct ferry_cache *c)
{
	return c->blobs;
}

const char *ferry_cache_url(const struct ferry_cache *c)
{
	return ferry_blobs_url(c->blobs);
}

const char *ferry_cache_local_dir(const struct ferry_cache *c)
{
	return ferry_blobs_local_dir(c->blobs);
}

int ferry_cache_put_segment(struct ferry_cache *c, const char *vm, uint64_t seq, const void *buf,
			    size_t len)
{
	char name[128];
	int r = cache_segment_name(vm, seq, name, sizeof(name));
	if (r < 0)
		return r;
	/* Exclusive: a seq, once visible, names one segment forever. */
	return ferry_blobs_put(c->blobs, name, buf, len, 1);
}

int ferry_cache_get_segment(struct ferry_cache *c, const char *vm, uint64_t seq, void **ret_buf,
			    size_t *ret_len)
{
	char name[128];
	int r = cache_segment_name(vm, seq, name, sizeof(name));
	if (r < 0)
		return r;
	/* No segment is larger: a bigger blob is refused before it is read. */
	return ferry_blobs_get_max(c->blobs, name, FERRY_SEGMENT_MAX_SIZE, ret_buf, ret_len);
}

int ferry_cache_delete_segment(struct ferry_cache *c, const char *vm, uint64_t seq)
{
	char name[128];
	int r = cache_segment_name(vm, seq, name, sizeof(name));
	if (r < 0)
		return r;
	return ferry_blobs_delete(c->blobs, name);
}

struct list_ctx {
	const char *vm;
	uint64_t *seqs;
	size_t n, cap;
	uint64_t bytes;
};

static int list_cb(const char *name, uint64_t size, void *userdata)
{
	struct list_ctx *l = userdata;
	uint64_t seq;
	if (cache_segment_name_parse(name, l->vm, &seq) < 0)
		return 0; /* junk (or a future naming scheme) is not ours to judge */
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		uint64_t *v = realloc(l->seqs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->seqs = v;
		l->cap = cap;
	}
	l->seqs[l->n++] = seq;
	l->bytes += size;
	return 0;
}

static int seq_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int ferry_cache_list_segments(struct ferry_cache *c, const char *vm, uint64_t **ret_seqs,
			      size_t *ret_n, uint64_t *ret_bytes)
{
	if (!ferry_name_valid(vm))
		return -EINVAL;
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "segments/%s/", vm);
	struct list_ctx l = { .vm = vm };
	int r = ferry_blobs_list(c->blobs, prefix, list_cb, &l);
	if (r < 0) {
		free(l.seqs);
		return r;
	}
	/* Fixed-width hex sorts like the numbers, but do not rely on a
	 * backend's listing order for what the replicator applies in order. */
	if (l.n > 1)
		qsort(l.seqs, l.n, sizeof(*l.seqs), seq_cmp);
	*ret_seqs = l.seqs;
	*ret_n = l.n;
	if (ret_bytes)
		*ret_bytes = l.bytes;
	return 0;
}

int ferry_cache_put_ack(struct ferry_cache *c, const char *vm, const struct ferry_ack *ack)
{
	char name[128];
	int r = ack_name(vm, name, sizeof(name));
	if (r < 0)
		return r;
	uint8_t buf[CACHE_ACK_MAX];
	size_t len;
	r = cache_ack_format(vm, ack, buf, sizeof(buf), &len);
	if (r < 0)
		return r;
	return ferry_blobs_put(c->blobs, name, buf, len, 0);
}

int ferry_cache_get_ack(struct ferry_cache *c, const char *vm, struct ferry_ack *ret)
{
	char name[128];
	int r = ack_name(vm, name, sizeof(name));
	if (r < 0)
		return r;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = ferry_blobs_get_max(c->blobs, name, CACHE_ACK_MAX, &buf, &len);
	if (r == -ENOENT) {
		*ret = (struct ferry_ack){ 0 };
		return 0;
	}
	if (r == -EFBIG) /* no ack is that large: damage, as any other */
		return -EBADMSG;
	if (r < 0)
		return r;
	return cache_ack_parse(buf, len, vm, ret);
}

int ferry_cache_chain_head(struct ferry_cache *c, const char *vm, uint64_t from,
			   struct ferry_chain_head *ret)
{
	struct ferry_chain_head h = { 0 };
	int r = ferry_cache_get_ack(c, vm, &h.ack);
	if (r < 0)
		return r;
	_cleanup_free_ uint64_t *seqs = NULL;
	size_t n;
	uint64_t bytes;
	r = ferry_cache_list_segments(c, vm, &seqs, &n, &bytes);
	if (r < 0)
		return r;
	if (n > 0 && seqs[n - 1] > h.ack.seq && seqs[n - 1] >= from) {
		_cleanup_free_ void *buf = NULL;
		size_t len;
		struct ferry_segment *seg;
		r = ferry_cache_get_segment(c, vm, seqs[n - 1], &buf, &len);
		if (r >= 0)
			r = ferry_segment_parse(buf, len, &seg);
		if (r < 0)
			return r == -EFBIG ? -EBADMSG : r; /* too large: not a segment */
		const struct ferry_segment_info *info = ferry_segment_info(seg);
		if (info->seq != seqs[n - 1] || strcmp(info->vm, vm) != 0) {
			ferry_segment_free(seg);
			return -EBADMSG;
		}
		h.top_seq = info->seq;
		h.top_digest = info->digest;
		for (uint32_t i = 0; i < info->nrecords; i++) {
			struct ferry_record rec;
			if (ferry_segment_record(seg, i, &rec) >= 0 &&
			    rec.type == FERRY_REC_MARKER) {
				h.top_marker = 1;
				h.top_marker_ns = rec.time_ns;
			}
		}
		ferry_segment_free(seg);
	}
	*ret = h;
	return 0;
}

int ferry_cache_put_status(struct ferry_cache *c, const char *vm,
			   const struct ferry_agent_status *st)
{
	char name[128];
	int r = status_name(vm, name, sizeof(name));
	if (r < 0)
		return r;
	uint8_t buf[CACHE_STATUS_MAX];
	size_t len;
	r = cache_status_format(vm, st, buf, sizeof(buf), &len);
	if (r < 0)
		return r;
	return ferry_blobs_put(c->blobs, name, buf, len, 0);
}

int ferry_cache_get_status(struct ferry_cache *c, const char *vm, struct ferry_agent_status *ret)
{
	char name[128];
	int r = status_name(vm, name, sizeof(name));
	if (r < 0)
		return r;
	/* The size first: a blob of any size may sit under that name, and
	 * only a small one can be a status. */
	uint64_t size;
	r = ferry_blobs_size(c->blobs, name, &size);
	if (r < 0)
		return r;
	if (size < CACHE_STATUS_LEN(1) || size > CACHE_STATUS_MAX)
		return -EBADMSG;
	uint8_t buf[CACHE_STATUS_MAX];
	r = ferry_blobs_get_range(c->blobs, name, 0, buf, (size_t)size);
	if (r < 0)
		return r;
	return cache_status_parse(buf, (size_t)size, vm, ret);
}
