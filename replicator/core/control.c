/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Control records in the cache (control.h): the agent lease and the resync
 * request and want, each a small record in the envelope every cache record
 * has (magic, major and minor version, length, fields, SHA-256 of all that
 * came before), and the fingerprint blobs of a resync. Readers check the
 * envelope before the fields, so damage is told apart from a version this
 * reader does not know. Format: docs/format/cache.md.
 */
#include "ferry/control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache-internal.h"
#include "control-internal.h"
#include "ferry/blobs.h"
#include "ferry/util.h"

#define LEASE_MAGIC "FERRYLSE"
#define REQUEST_MAGIC "FERRYRSQ"
#define WANT_MAGIC "FERRYRSW"
#define GROUP_MAGIC "FERRYGRP"
#define MAJOR 1
#define MINOR 0

/* The envelope: magic, major, minor, length, then the fields; the
 * checksum closes it. */
#define O_MAJOR 8
#define O_MINOR 10
#define O_LEN 12
#define O_FIELDS 16
#define SUM_SIZE FERRY_ID_SIZE

/* ---- writing and reading fields ---- */

struct wcur {
	uint8_t *b;
	size_t size, pos;
	int overflow;
};

static void w_bytes(struct wcur *w, const void *p, size_t n)
{
	if (w->overflow || n > w->size - w->pos) {
		w->overflow = 1;
		return;
	}
	memcpy(w->b + w->pos, p, n);
	w->pos += n;
}

static void w_u8(struct wcur *w, uint8_t v)
{
	w_bytes(w, &v, 1);
}

static void w_u16(struct wcur *w, uint16_t v)
{
	uint8_t b[2];
	put_le16(b, v);
	w_bytes(w, b, 2);
}

static void w_u32(struct wcur *w, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	w_bytes(w, b, 4);
}

static void w_u64(struct wcur *w, uint64_t v)
{
	uint8_t b[8];
	put_le64(b, v);
	w_bytes(w, b, 8);
}

/* A string with a one-byte length before it. */
static void w_str(struct wcur *w, const char *s)
{
	size_t n = strlen(s);
	w_u8(w, (uint8_t)n);
	w_bytes(w, s, n);
}

static void w_begin(struct wcur *w, void *buf, size_t size, const char *magic)
{
	*w = (struct wcur){ .b = buf, .size = size };
	w_bytes(w, magic, 8);
	w_u16(w, MAJOR);
	w_u16(w, MINOR);
	w_u32(w, 0); /* the length, once known */
}

static int w_end(struct wcur *w, size_t *ret_len)
{
	if (w->overflow || w->size - w->pos < SUM_SIZE)
		return -ENOBUFS;
	size_t len = w->pos + SUM_SIZE;
	put_le32(w->b + O_LEN, (uint32_t)len);
	struct ferry_id sum;
	ferry_sha256(w->b, w->pos, &sum);
	memcpy(w->b + w->pos, sum.b, SUM_SIZE);
	*ret_len = len;
	return 0;
}

struct rcur {
	const uint8_t *b;
	size_t pos, end; /* end: where the checksum begins */
	int bad;
};

static const uint8_t *r_bytes(struct rcur *r, size_t n)
{
	if (r->bad || n > r->end - r->pos) {
		r->bad = 1;
		return NULL;
	}
	const uint8_t *p = r->b + r->pos;
	r->pos += n;
	return p;
}

static uint8_t r_u8(struct rcur *r)
{
	const uint8_t *p = r_bytes(r, 1);
	return p ? p[0] : 0;
}

static uint16_t r_u16(struct rcur *r)
{
	const uint8_t *p = r_bytes(r, 2);
	return p ? get_le16(p) : 0;
}

static uint32_t r_u32(struct rcur *r)
{
	const uint8_t *p = r_bytes(r, 4);
	return p ? get_le32(p) : 0;
}

static uint64_t r_u64(struct rcur *r)
{
	const uint8_t *p = r_bytes(r, 8);
	return p ? get_le64(p) : 0;
}

static void r_copy(struct rcur *r, void *dst, size_t n)
{
	const uint8_t *p = r_bytes(r, n);
	if (p)
		memcpy(dst, p, n);
}

/* A string of 1..max bytes, without NUL, into dst (max + 1 bytes). */
static void r_str(struct rcur *r, char *dst, size_t max)
{
	size_t n = r_u8(r);
	const uint8_t *p = r_bytes(r, n);
	if (!p || n == 0 || n > max || memchr(p, 0, n)) {
		r->bad = 1;
		dst[0] = 0;
		return;
	}
	memcpy(dst, p, n);
	dst[n] = 0;
}

/* The envelope: size, magic, length field, checksum, then the major
 * version. On success the cursor stands at the first field. */
static int r_begin(struct rcur *r, const void *buf, size_t len, const char *magic, size_t max)
{
	const uint8_t *b = buf;
	if (!buf || len < O_FIELDS + SUM_SIZE || len > max)
		return -EBADMSG;
	if (memcmp(b, magic, 8) != 0 || get_le32(b + O_LEN) != len)
		return -EBADMSG;
	struct ferry_id sum;
	ferry_sha256(b, len - SUM_SIZE, &sum);
	if (memcmp(sum.b, b + len - SUM_SIZE, SUM_SIZE) != 0)
		return -EBADMSG;
	if (get_le16(b + O_MAJOR) != MAJOR)
		return -EPROTONOSUPPORT;
	*r = (struct rcur){ .b = b, .pos = O_FIELDS, .end = len - SUM_SIZE };
	return 0;
}

/* The VM name field: valid, and the expected one when vm is set. A minor
 * version may add fields after the last field of 1.0: the rest is skipped. */
static int r_vm(struct rcur *r, const char *vm)
{
	char name[65];
	r_str(r, name, 64);
	if (r->bad || !ferry_name_valid(name) || (vm && strcmp(vm, name) != 0))
		return -EBADMSG;
	return 0;
}

static int id_is_zero(const uint8_t id[FERRY_LEASE_ID_SIZE])
{
	for (size_t i = 0; i < FERRY_LEASE_ID_SIZE; i++)
		if (id[i])
			return 0;
	return 1;
}

/* ---- the lease ---- */

static int host_valid(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > FERRY_LEASE_HOST_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (h[i] < 0x21 || h[i] > 0x7e)
			return 0;
	return 1;
}

static int lease_consistent(const struct ferry_lease *l)
{
	return !id_is_zero(l->id) && host_valid(l->host) && l->written_ns >= 0 &&
	       l->expires_ns >= l->written_ns;
}

int control_lease_format(const char *vm, const struct ferry_lease *l, void *buf, size_t size,
			 size_t *ret_len)
{
	if (!ferry_name_valid(vm) || !lease_consistent(l))
		return -EINVAL;
	struct wcur w;
	w_begin(&w, buf, size, LEASE_MAGIC);
	w_bytes(&w, l->id, FERRY_LEASE_ID_SIZE);
	w_u64(&w, (uint64_t)l->written_ns);
	w_u64(&w, (uint64_t)l->expires_ns);
	w_u64(&w, l->seq);
	w_u32(&w, l->pid);
	w_str(&w, l->host);
	w_str(&w, vm);
	return w_end(&w, ret_len);
}

int control_lease_parse(const void *buf, size_t len, const char *vm, struct ferry_lease *ret)
{
	struct rcur r;
	int k = r_begin(&r, buf, len, LEASE_MAGIC, CONTROL_LEASE_MAX);
	if (k < 0)
		return k;
	struct ferry_lease l = { 0 };
	r_copy(&r, l.id, FERRY_LEASE_ID_SIZE);
	l.written_ns = (int64_t)r_u64(&r);
	l.expires_ns = (int64_t)r_u64(&r);
	l.seq = r_u64(&r);
	l.pid = r_u32(&r);
	r_str(&r, l.host, FERRY_LEASE_HOST_MAX);
	if (r_vm(&r, vm) < 0 || !lease_consistent(&l))
		return -EBADMSG;
	*ret = l;
	return 0;
}

/* ---- the resync request ---- */

static int request_consistent(const struct ferry_resync_request *q)
{
	if (q->epoch == 0 || q->base_seq == 0 || ferry_id_is_null(&q->base_digest) ||
	    q->requested_ns < 0 || q->applied_seq > q->base_seq || q->ndisks == 0 ||
	    q->ndisks > FERRY_RESYNC_MAX_DISKS)
		return 0;
	for (size_t i = 0; i < q->ndisks; i++) {
		const struct ferry_resync_disk *d = &q->disks[i];
		if (!ferry_name_valid(d->name) || d->size > (UINT64_C(1) << 62) ||
		    (d->size == 0) != !!ferry_id_is_null(&d->sum))
			return 0;
		for (size_t j = 0; j < i; j++)
			if (strcmp(q->disks[j].name, d->name) == 0)
				return 0;
	}
	return 1;
}

int control_request_format(const char *vm, const struct ferry_resync_request *q, void *buf,
			   size_t size, size_t *ret_len)
{
	if (!ferry_name_valid(vm) || !request_consistent(q))
		return -EINVAL;
	struct wcur w;
	w_begin(&w, buf, size, REQUEST_MAGIC);
	w_u64(&w, q->epoch);
	w_u64(&w, q->base_seq);
	w_bytes(&w, q->base_digest.b, FERRY_ID_SIZE);
	w_u64(&w, (uint64_t)q->requested_ns);
	w_u64(&w, q->applied_seq);
	w_str(&w, vm);
	w_u16(&w, (uint16_t)q->ndisks);
	for (size_t i = 0; i < q->ndisks; i++) {
		w_str(&w, q->disks[i].name);
		w_u64(&w, q->disks[i].size);
		w_bytes(&w, q->disks[i].sum.b, FERRY_ID_SIZE);
	}
	return w_end(&w, ret_len);
}

int control_request_parse(const void *buf, size_t len, const char *vm,
			  struct ferry_resync_request *ret)
{
	struct rcur r;
	int k = r_begin(&r, buf, len, REQUEST_MAGIC, CONTROL_REQUEST_MAX);
	if (k < 0)
		return k;
	_cleanup_free_ struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->epoch = r_u64(&r);
	q->base_seq = r_u64(&r);
	r_copy(&r, q->base_digest.b, FERRY_ID_SIZE);
	q->requested_ns = (int64_t)r_u64(&r);
	q->applied_seq = r_u64(&r);
	if (r_vm(&r, vm) < 0)
		return -EBADMSG;
	q->ndisks = r_u16(&r);
	if (q->ndisks > FERRY_RESYNC_MAX_DISKS)
		return -EBADMSG;
	for (size_t i = 0; i < q->ndisks; i++) {
		r_str(&r, q->disks[i].name, 64);
		q->disks[i].size = r_u64(&r);
		r_copy(&r, q->disks[i].sum.b, FERRY_ID_SIZE);
	}
	if (r.bad || !request_consistent(q))
		return -EBADMSG;
	*ret = *q;
	return 0;
}

/* ---- the resync want ---- */

static int want_consistent(const struct ferry_resync_want *w)
{
	return !id_is_zero(w->id) && w->written_ns >= 0 && w->reason != 0;
}

int control_want_format(const char *vm, const struct ferry_resync_want *wt, void *buf, size_t size,
			size_t *ret_len)
{
	if (!ferry_name_valid(vm) || !want_consistent(wt))
		return -EINVAL;
	struct wcur w;
	w_begin(&w, buf, size, WANT_MAGIC);
	w_bytes(&w, wt->id, FERRY_LEASE_ID_SIZE);
	w_u64(&w, (uint64_t)wt->written_ns);
	w_u64(&w, wt->seen_epoch);
	w_u8(&w, wt->reason);
	w_str(&w, vm);
	return w_end(&w, ret_len);
}

int control_want_parse(const void *buf, size_t len, const char *vm, struct ferry_resync_want *ret)
{
	struct rcur r;
	int k = r_begin(&r, buf, len, WANT_MAGIC, CONTROL_WANT_MAX);
	if (k < 0)
		return k;
	struct ferry_resync_want w = { 0 };
	r_copy(&r, w.id, FERRY_LEASE_ID_SIZE);
	w.written_ns = (int64_t)r_u64(&r);
	w.seen_epoch = r_u64(&r);
	w.reason = r_u8(&r);
	if (r_vm(&r, vm) < 0 || !want_consistent(&w))
		return -EBADMSG;
	*ret = w;
	return 0;
}

const char *ferry_want_reason_text(uint8_t reason)
{
	switch (reason) {
	case FERRY_WANT_STATE_BEHIND:
		return "the agent's state is older than the chain it shipped (a restored state "
		       "directory?)";
	case FERRY_WANT_OTHER_AGENT:
		return "another agent state shipped the VM's chain since this one last did";
	case FERRY_WANT_STATE_LOST:
		return "the agent has no state but the vault holds the VM's chain";
	case FERRY_WANT_CHAIN_LOST:
		return "segments the agent shipped left the cache without being applied";
	case FERRY_WANT_UNUSABLE:
		return "a resync the agent's state took no part in replaced the chain, or the "
		       "agent could not adopt it";
	}
	return "unknown reason";
}

/* ---- I/O ---- */

/* "<dir>/<vm><suffix>" */
static int record_name(char *buf, size_t size, const char *dir, const char *vm, const char *suffix)
{
	if (!ferry_name_valid(vm))
		return -EINVAL;
	int n = snprintf(buf, size, "%s/%s%s", dir, vm, suffix);
	return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
}

/* Reads a record of at most max bytes; one that is larger is damage. */
static int get_record(struct ferry_cache *c, const char *name, size_t max, void **ret_buf,
		      size_t *ret_len)
{
	int r = ferry_blobs_get_max(cache_blobs(c), name, max, ret_buf, ret_len);
	return r == -EFBIG ? -EBADMSG : r;
}

int ferry_control_get_lease(struct ferry_cache *c, const char *vm, struct ferry_lease *ret)
{
	char name[128];
	int r = record_name(name, sizeof(name), "leases", vm, ".lease");
	if (r < 0)
		return r;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = get_record(c, name, CONTROL_LEASE_MAX, &buf, &len);
	return r < 0 ? r : control_lease_parse(buf, len, vm, ret);
}

int ferry_control_put_lease(struct ferry_cache *c, const char *vm, const struct ferry_lease *l,
			    int exclusive)
{
	char name[128];
	uint8_t buf[CONTROL_LEASE_MAX];
	size_t len;
	int r = record_name(name, sizeof(name), "leases", vm, ".lease");
	if (r >= 0)
		r = control_lease_format(vm, l, buf, sizeof(buf), &len);
	return r < 0 ? r : ferry_blobs_put(cache_blobs(c), name, buf, len, exclusive);
}

int ferry_control_get_request(struct ferry_cache *c, const char *vm,
			      struct ferry_resync_request *ret)
{
	char name[128];
	int r = record_name(name, sizeof(name), "resync", vm, ".req");
	if (r < 0)
		return r;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = get_record(c, name, CONTROL_REQUEST_MAX, &buf, &len);
	return r < 0 ? r : control_request_parse(buf, len, vm, ret);
}

int ferry_control_put_request(struct ferry_cache *c, const char *vm,
			      const struct ferry_resync_request *q)
{
	char name[128];
	int r = record_name(name, sizeof(name), "resync", vm, ".req");
	if (r < 0)
		return r;
	_cleanup_free_ uint8_t *buf = malloc(CONTROL_REQUEST_MAX);
	if (!buf)
		return -ENOMEM;
	size_t len;
	r = control_request_format(vm, q, buf, CONTROL_REQUEST_MAX, &len);
	return r < 0 ? r : ferry_blobs_put(cache_blobs(c), name, buf, len, 0);
}

int ferry_control_delete_request(struct ferry_cache *c, const char *vm)
{
	char name[128];
	int r = record_name(name, sizeof(name), "resync", vm, ".req");
	return r < 0 ? r : ferry_blobs_delete(cache_blobs(c), name);
}

int ferry_control_get_want(struct ferry_cache *c, const char *vm, struct ferry_resync_want *ret)
{
	char name[128];
	int r = record_name(name, sizeof(name), "resync", vm, ".want");
	if (r < 0)
		return r;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = get_record(c, name, CONTROL_WANT_MAX, &buf, &len);
	return r < 0 ? r : control_want_parse(buf, len, vm, ret);
}

int ferry_control_put_want(struct ferry_cache *c, const char *vm, const struct ferry_resync_want *w)
{
	char name[128];
	uint8_t buf[CONTROL_WANT_MAX];
	size_t len;
	int r = record_name(name, sizeof(name), "resync", vm, ".want");
	if (r >= 0)
		r = control_want_format(vm, w, buf, sizeof(buf), &len);
	return r < 0 ? r : ferry_blobs_put(cache_blobs(c), name, buf, len, 0);
}

int ferry_control_delete_want(struct ferry_cache *c, const char *vm)
{
	char name[128];
	int r = record_name(name, sizeof(name), "resync", vm, ".want");
	return r < 0 ? r : ferry_blobs_delete(cache_blobs(c), name);
}

static int fp_name(char *buf, size_t size, const char *vm, uint64_t epoch, const char *disk)
{
	if (!ferry_name_valid(vm) || !ferry_name_valid(disk) || epoch == 0)
		return -EINVAL;
	int n = snprintf(buf, size, "resync/%s/%016" PRIx64 "/%s.fp", vm, epoch, disk);
	return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
}

int ferry_control_put_fp(struct ferry_cache *c, const char *vm, uint64_t epoch, const char *disk,
			 const void *buf, size_t len)
{
	char name[256];
	int r = fp_name(name, sizeof(name), vm, epoch, disk);
	return r < 0 ? r : ferry_blobs_put(cache_blobs(c), name, buf, len, 0);
}

int ferry_control_fp_size(struct ferry_cache *c, const char *vm, uint64_t epoch, const char *disk,
			  uint64_t *ret)
{
	char name[256];
	int r = fp_name(name, sizeof(name), vm, epoch, disk);
	return r < 0 ? r : ferry_blobs_size(cache_blobs(c), name, ret);
}

int ferry_control_get_fp_range(struct ferry_cache *c, const char *vm, uint64_t epoch,
			       const char *disk, uint64_t off, void *buf, size_t len)
{
	char name[256];
	int r = fp_name(name, sizeof(name), vm, epoch, disk);
	return r < 0 ? r : ferry_blobs_get_range(cache_blobs(c), name, off, buf, len);
}

/* Names a walk collected, to delete once the listing is over. */
struct name_list {
	char **names;
	size_t n;
};

static int name_list_add(struct name_list *l, const char *name)
{
	char **v = realloc(l->names, (l->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->names = v;
	if (!(l->names[l->n] = strdup(name)))
		return -ENOMEM;
	l->n++;
	return 0;
}

/* "<16 lowercase hex>/" at e, as epochs and rounds are named: 0 and the
 * number, or -1 for anything else. */
static int hex16_dir(const char *e, uint64_t *ret)
{
	uint64_t v = 0;
	for (size_t i = 0; i < 16; i++) {
		int d = ferry_hex_digit(e[i]);
		if (d < 0 || (e[i] >= 'A' && e[i] <= 'F'))
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	if (e[16] != '/')
		return -1;
	*ret = v;
	return 0;
}

struct fp_list {
	const char *prefix;
	uint64_t keep;
	struct name_list l;
};

static int note_fp(const char *name, uint64_t size, void *userdata)
{
	struct fp_list *l = userdata;
	/* <prefix><16 hex>/<disk>.fp; anything else under it is not ours. */
	uint64_t epoch;
	if (hex16_dir(name + strlen(l->prefix), &epoch) < 0 || epoch == l->keep)
		return 0;
	return name_list_add(&l->l, name);
}

int ferry_control_delete_fps(struct ferry_cache *c, const char *vm, uint64_t keep)
{
	char prefix[128];
	int r = record_name(prefix, sizeof(prefix), "resync", vm, "/");
	if (r < 0)
		return r;
	struct fp_list l = { .prefix = prefix, .keep = keep };
	r = ferry_blobs_list(cache_blobs(c), prefix, note_fp, &l);
	for (size_t i = 0; i < l.l.n; i++) {
		if (r >= 0)
			r = ferry_blobs_delete(cache_blobs(c), l.l.names[i]);
		free(l.l.names[i]);
	}
	free(l.l.names);
	return r;
}

/* ---- consistency groups ---- */

static const char *const step_names[] = {
	[FERRY_GROUP_MEMBER] = "member", [FERRY_GROUP_READY] = "ready",
	[FERRY_GROUP_PAUSED] = "paused", [FERRY_GROUP_ABORT] = "abort",
	[FERRY_GROUP_CUT] = "cut",
};

static int group_consistent(const struct ferry_group_record *g)
{
	if (g->step < FERRY_GROUP_MEMBER || g->step > FERRY_GROUP_CUT ||
	    (g->step == FERRY_GROUP_MEMBER) != (g->round == 0) || g->time_ns < 0 ||
	    !ferry_name_valid(g->vm))
		return 0;
	size_t n = strnlen(g->reason, sizeof(g->reason));
	return n <= FERRY_GROUP_REASON_MAX && (n == 0 || g->step == FERRY_GROUP_ABORT);
}

int control_group_format(const struct ferry_group_record *g, void *buf, size_t size,
			 size_t *ret_len)
{
	if (!group_consistent(g))
		return -EINVAL;
	struct wcur w;
	w_begin(&w, buf, size, GROUP_MAGIC);
	w_u8(&w, g->step);
	w_u64(&w, g->round);
	w_u64(&w, (uint64_t)g->time_ns);
	w_str(&w, g->vm);
	w_str(&w, g->reason); /* may be empty, unlike the name */
	return w_end(&w, ret_len);
}

int control_group_parse(const void *buf, size_t len, const char *vm, struct ferry_group_record *ret)
{
	struct rcur r;
	int k = r_begin(&r, buf, len, GROUP_MAGIC, CONTROL_GROUP_MAX);
	if (k < 0)
		return k;
	struct ferry_group_record g = { 0 };
	g.step = r_u8(&r);
	g.round = r_u64(&r);
	g.time_ns = (int64_t)r_u64(&r);
	r_str(&r, g.vm, 64);
	size_t n = r_u8(&r);
	const uint8_t *p = r_bytes(&r, n);
	if (r.bad || (vm && strcmp(vm, g.vm) != 0) || (p && memchr(p, 0, n)))
		return -EBADMSG;
	memcpy(g.reason, p, n);
	g.reason[n] = 0;
	if (!group_consistent(&g))
		return -EBADMSG;
	*ret = g;
	return 0;
}

static int group_name(char *buf, size_t size, const char *group, uint64_t round, uint8_t step,
		      const char *vm)
{
	if (!ferry_name_valid(group) || !ferry_name_valid(vm) || step < FERRY_GROUP_MEMBER ||
	    step > FERRY_GROUP_CUT)
		return -EINVAL;
	int n = round ? snprintf(buf, size, "groups/%s/rounds/%016" PRIx64 "/%s.%s", group, round,
				 vm, step_names[step]) :
			snprintf(buf, size, "groups/%s/members/%s.member", group, vm);
	return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
}

int ferry_control_put_group(struct ferry_cache *c, const char *group,
			    const struct ferry_group_record *rec)
{
	char name[256];
	uint8_t buf[CONTROL_GROUP_MAX];
	size_t len;
	int r = group_name(name, sizeof(name), group, rec->round, rec->step, rec->vm);
	if (r >= 0)
		r = control_group_format(rec, buf, sizeof(buf), &len);
	return r < 0 ? r : ferry_blobs_put(cache_blobs(c), name, buf, len, 0);
}

int ferry_control_get_group(struct ferry_cache *c, const char *group, uint64_t round, uint8_t step,
			    const char *vm, struct ferry_group_record *ret)
{
	char name[256];
	int r = group_name(name, sizeof(name), group, round, step, vm);
	if (r < 0)
		return r;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = get_record(c, name, CONTROL_GROUP_MAX, &buf, &len);
	if (r < 0)
		return r;
	struct ferry_group_record g;
	r = control_group_parse(buf, len, vm, &g);
	if (r < 0)
		return r;
	if (g.step != step || g.round != round)
		return -EBADMSG;
	*ret = g;
	return 0;
}

struct group_walk {
	size_t prefix_len;
	int (*cb)(const char *vm, uint8_t step, void *userdata);
	void *userdata;
};

static int group_entry(const char *name, uint64_t size, void *userdata)
{
	struct group_walk *gw = userdata;
	const char *base = name + gw->prefix_len, *dot = strrchr(base, '.');
	if (!dot || strchr(base, '/') || (size_t)(dot - base) > 64)
		return 0;
	char vm[65];
	memcpy(vm, base, (size_t)(dot - base));
	vm[dot - base] = 0;
	if (!ferry_name_valid(vm))
		return 0;
	for (uint8_t s = FERRY_GROUP_MEMBER; s <= FERRY_GROUP_CUT; s++)
		if (strcmp(dot + 1, step_names[s]) == 0)
			return gw->cb(vm, s, gw->userdata);
	return 0;
}

int ferry_control_list_group(struct ferry_cache *c, const char *group, uint64_t round,
			     int (*cb)(const char *vm, uint8_t step, void *userdata),
			     void *userdata)
{
	char prefix[160];
	if (!ferry_name_valid(group))
		return -EINVAL;
	int n = round ? snprintf(prefix, sizeof(prefix), "groups/%s/rounds/%016" PRIx64 "/", group,
				 round) :
			snprintf(prefix, sizeof(prefix), "groups/%s/members/", group);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		return -ENOBUFS;
	struct group_walk gw = { (size_t)n, cb, userdata };
	return ferry_blobs_list(cache_blobs(c), prefix, group_entry, &gw);
}

struct round_list {
	size_t prefix_len;
	const char *vm;
	uint64_t before;
	struct name_list l;
};

static int note_round(const char *name, uint64_t size, void *userdata)
{
	struct round_list *l = userdata;
	/* <prefix><16 hex>/<vm>.<step> */
	const char *e = name + l->prefix_len;
	uint64_t round;
	if (hex16_dir(e, &round) < 0 || round >= l->before)
		return 0;
	/* <vm>.<step>: the VM is all before the last dot (names hold dots:
	 * "db" must not take "db.x"'s records). */
	const char *base = e + 17, *dot = strrchr(base, '.');
	size_t vl = strlen(l->vm);
	if (!dot || (size_t)(dot - base) != vl || strncmp(base, l->vm, vl) != 0)
		return 0;
	return name_list_add(&l->l, name);
}

int ferry_control_delete_group_rounds(struct ferry_cache *c, const char *group, const char *vm,
				      uint64_t before)
{
	char prefix[160];
	if (!ferry_name_valid(group) || !ferry_name_valid(vm))
		return -EINVAL;
	int n = snprintf(prefix, sizeof(prefix), "groups/%s/rounds/", group);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		return -ENOBUFS;
	struct round_list l = { (size_t)n, vm, before, { NULL, 0 } };
	int r = ferry_blobs_list(cache_blobs(c), prefix, note_round, &l);
	for (size_t i = 0; i < l.l.n; i++) {
		if (r >= 0 || r == -ENOENT)
			r = ferry_blobs_delete(cache_blobs(c), l.l.names[i]);
		free(l.l.names[i]);
	}
	free(l.l.names);
	return r == -ENOENT ? 0 : r;
}
