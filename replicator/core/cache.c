/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache: segments travelling from agent to replicator and the acks
 * travelling back, as named blobs. Segments are created exclusively and
 * never rewritten, so a seq names exactly one segment for its whole life;
 * the ack is a small checksummed record replaced whole. The protocol both
 * sides follow around it (and after a crash at any step) is in
 * docs/format/cache.md.
 */
#include "ferry/cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache-internal.h"
#include "ferry/blobs.h"
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

const char *ferry_cache_url(const struct ferry_cache *c)
{
	return ferry_blobs_url(c->blobs);
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
	return ferry_blobs_get(c->blobs, name, ret_buf, ret_len);
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
	r = ferry_blobs_get(c->blobs, name, &buf, &len);
	if (r == -ENOENT) {
		*ret = (struct ferry_ack){ 0 };
		return 0;
	}
	if (r < 0)
		return r;
	return cache_ack_parse(buf, len, vm, ret);
}
