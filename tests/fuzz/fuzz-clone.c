/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the clone write path (fs/clone.c): a writable clone of a
 * recovery point's disk, its overlay of dirty blocks and its flushes into
 * the vault. A scratch vault is set up once: one VM, three disks (1 MiB,
 * one whose size is not a block multiple, and one of 5 MiB) holding a fixed
 * pattern with holes, a point and a test failover whose clone rows start at
 * the point's roots. Each input picks a disk and is a sequence of
 * operations on a clone of it: writes (unaligned, straddling or past the
 * end, or small ones scattered over many blocks), reads, seeks, flushes,
 * reopens (read-write or read-only), a discard, and a "steal" that moves
 * the clone's row back to the point under the clone's feet, as another
 * writer would. A shadow model says what every call must return: every read
 * equals the model, a write past the end fails with -EFBIG, a flush over a
 * stolen row fails with -ESTALE and keeps the overlay, and after the final
 * flush and reopen the clone reads as the model. The rows go back to the
 * point's roots before each input, so an input always starts from the same
 * disk.
 */
#include <errno.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clone.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/image.h"
#include "ferry/ingest.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/util.h"
#include "ferry/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The smallest chunk: whole aligned chunks (4 blocks) are within reach of
 * a few writes, so flushes take both of the ingest's paths. */
#define CHUNK FERRY_CHUNK_SIZE_MIN
#define NDISKS 3
/* Bounds on one input, so that a run stays fast. */
#define MAX_OPS 64
#define MAX_LEN (5 * FERRY_BLOCK_SIZE + 123)
#define MAX_BYTES (256u << 10)
#define MAX_SCATTER 1500
/* Flushes pile packs up in the vault: past this it is built again. */
#define MAX_STORE_BYTES (64u << 20)

/* The third is large enough for more dirty blocks than the overlay's
 * first table has buckets, and for runs that cross a 1 MiB boundary. */
static const uint64_t disk_sizes[NDISKS] = { 1u << 20, (768u << 10) + 1234, (5u << 20) + 512 };

#define expect(x)                                                                           \
	do {                                                                                \
		if (!(x)) {                                                                 \
			fprintf(stderr, "fuzz-clone: %s:%d: %s\n", __FILE__, __LINE__, #x); \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* The scratch vault, set up once (and again when it grew too big). */
static struct {
	char dir[128];
	unsigned generation;
	struct ferry_vault *wv, *rv;
	struct ferry_chunk_cache *cc;
	int64_t failover_id;
	struct ferry_id base_root[NDISKS];
	uint8_t *base[NDISKS];
	/* What the clone rows in the catalog hold now. */
	struct ferry_id row_root[NDISKS];
} fx;

static char top[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void remove_top(void)
{
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The point's disk: a pattern that does not repeat between blocks, with
 * zero blocks scattered and one longer hole; past 1 MiB mostly holes. */
static void base_fill(unsigned idx, uint8_t *buf, uint64_t size)
{
	for (uint64_t b = 0; b * FERRY_BLOCK_SIZE < size; b++) {
		uint8_t *p = buf + b * FERRY_BLOCK_SIZE;
		size_t n = (size_t)MIN((uint64_t)FERRY_BLOCK_SIZE, size - b * FERRY_BLOCK_SIZE);
		uint32_t x = (uint32_t)(b * 2654435761u) ^ (idx + 1);

		if (b % 7 == 3 || (b >= 40 && b < 72) || (b >= 256 && b % 97 != 0)) {
			memset(p, 0, n);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			p[i] = (uint8_t)(x >> 16);
		}
	}
}

struct setup_rows {
	int64_t vm_id;
	struct ferry_id roots[NDISKS];
	int64_t failover_id;
};

/* In the base ingest's commit: the disks' roots, a point of them, and a
 * test failover whose clones start there. */
static int setup_rows_cb(struct ferry_catalog *c, void *userdata)
{
	struct setup_rows *sr = userdata;
	struct ferry_point p = { .vm_id = sr->vm_id,
				 .time_ns = 1795757400000000000LL,
				 .consistency = FERRY_CONSISTENCY_CRASH,
				 .seq = 1 };
	struct ferry_point_disk pd[NDISKS];
	struct ferry_clone_disk cd[NDISKS];
	int r = 0;

	for (unsigned i = 0; r >= 0 && i < NDISKS; i++) {
		struct ferry_disk d = { .vm_id = sr->vm_id,
					.idx = (uint16_t)i,
					.size = disk_sizes[i],
					.live_root = sr->roots[i],
					.work_root = sr->roots[i] };

		snprintf(d.name, sizeof(d.name), "disk%u", i);
		r = ferry_catalog_disk_update(c, &d);
		pd[i] = (struct ferry_point_disk){ .idx = (uint16_t)i,
						   .size = disk_sizes[i],
						   .root = sr->roots[i] };
		snprintf(pd[i].name, sizeof(pd[i].name), "disk%u", i);
		cd[i] = (struct ferry_clone_disk){ .idx = (uint16_t)i,
						   .size = disk_sizes[i],
						   .base_root = sr->roots[i],
						   .root = sr->roots[i] };
		snprintf(cd[i].name, sizeof(cd[i].name), "disk%u", i);
	}
	if (r >= 0)
		r = ferry_catalog_point_add(c, &p, pd, NDISKS);
	if (r < 0)
		return r;

	struct ferry_failover f = { .vm_id = sr->vm_id,
				    .kind = FERRY_FAILOVER_TEST,
				    .state = FERRY_FAILOVER_ACTIVE,
				    .point_time_ns = p.time_ns,
				    .created_ns = 1 };
	snprintf(f.name, sizeof(f.name), "fuzz");
	snprintf(f.point_name, sizeof(f.point_name), "%s", p.name);
	snprintf(f.network, sizeof(f.network), "isolated");
	snprintf(f.subnet, sizeof(f.subnet), "default");
	r = ferry_catalog_failover_add(c, &f, cd, NDISKS);
	if (r >= 0)
		sr->failover_id = f.id;
	return r;
}

static void setup(void)
{
	struct ferry_vm vm = { .state = FERRY_VM_PROTECTED, .retention_s = 86400, .created_ns = 1 };
	struct setup_rows sr = { 0 };
	struct ferry_ingest *in = NULL;
	struct ferry_map *m[NDISKS] = { NULL };
	struct ferry_catalog *c;
	int r;

	snprintf(fx.dir, sizeof(fx.dir), "%s/v%u", top, fx.generation++);
	expect(ferry_vault_create(fx.dir, CHUNK, NULL) >= 0);
	expect(ferry_vault_open(fx.dir, 0, &fx.wv) >= 0);
	c = ferry_vault_catalog(fx.wv);

	snprintf(vm.name, sizeof(vm.name), "fuzz");
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s/cache", fx.dir);
	expect(ferry_catalog_begin(c) >= 0);
	expect(ferry_catalog_vm_add(c, &vm) >= 0);
	for (unsigned i = 0; i < NDISKS; i++) {
		struct ferry_disk d = { .vm_id = vm.id, .idx = (uint16_t)i };

		snprintf(d.name, sizeof(d.name), "disk%u", i);
		expect(ferry_catalog_disk_add(c, &d) >= 0);
	}
	expect(ferry_catalog_commit(c) >= 0);

	/* The point's data, through the one ingest path. */
	expect(ferry_ingest_new(fx.wv, &in) >= 0);
	for (unsigned i = 0; i < NDISKS; i++) {
		uint64_t nblocks = DIV_ROUND_UP(disk_sizes[i], (uint64_t)FERRY_BLOCK_SIZE);
		_cleanup_free_ uint8_t *padded = calloc(nblocks, FERRY_BLOCK_SIZE);

		expect(padded);
		if (!fx.base[i]) {
			fx.base[i] = malloc(disk_sizes[i]);
			expect(fx.base[i]);
			base_fill(i, fx.base[i], disk_sizes[i]);
		}
		memcpy(padded, fx.base[i], disk_sizes[i]);
		expect(ferry_map_open(ferry_ingest_objsrc(in), NULL, nblocks, &m[i]) >= 0);
		expect(ferry_ingest_write(in, m[i], 0, padded, nblocks) >= 0);
	}
	expect(ferry_ingest_flush(in) >= 0);
	for (unsigned i = 0; i < NDISKS; i++)
		expect(ferry_map_commit(m[i], &sr.roots[i]) >= 0);
	sr.vm_id = vm.id;
	r = ferry_ingest_commit(in, setup_rows_cb, &sr);
	expect(r >= 0);
	for (unsigned i = 0; i < NDISKS; i++) {
		ferry_map_free(m[i]);
		fx.base_root[i] = fx.row_root[i] = sr.roots[i];
	}
	ferry_ingest_free(in);
	fx.failover_id = sr.failover_id;

	/* Reads go through a read-only handle, as in ferryfs; no read-ahead
	 * threads, so that a run depends on its input only. */
	expect(ferry_vault_open(fx.dir, 1, &fx.rv) >= 0);
	expect(ferry_chunk_cache_new(fx.rv, 8u << 20, &fx.cc) >= 0);
	expect(ferry_chunk_cache_set_prefetch(fx.cc, 0, 0) >= 0);
}

static void teardown(void)
{
	fx.cc = ferry_chunk_cache_free(fx.cc);
	fx.rv = ferry_vault_free(fx.rv);
	fx.wv = ferry_vault_free(fx.wv);
	nftw(fx.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct row_find {
	uint16_t idx;
	int found;
	struct ferry_clone_disk d;
};

static int row_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct row_find *rf = userdata;

	if (d->idx == rf->idx) {
		rf->d = *d;
		rf->found = 1;
	}
	return 0;
}

/* The clone row of disk idx, as ferryfs's registry reads it: through
 * the read-only handle. */
static void row_get(unsigned idx, struct ferry_clone_disk *ret)
{
	struct row_find rf = { .idx = (uint16_t)idx };

	expect(ferry_catalog_clone_disks(ferry_vault_catalog(fx.rv), fx.failover_id, row_cb, &rf) >=
	       0);
	expect(rf.found);
	*ret = rf.d;
}

static void row_set(unsigned idx, const struct ferry_id *root)
{
	struct ferry_catalog *c = ferry_vault_catalog(fx.wv);

	expect(ferry_catalog_begin(c) >= 0);
	expect(ferry_catalog_clone_disk_set_root(c, fx.failover_id, (uint16_t)idx, root) >= 0);
	expect(ferry_catalog_commit(c) >= 0);
	fx.row_root[idx] = *root;
}

/* What every call on the clone must return. */
struct shadow {
	unsigned idx;
	uint64_t size, nblocks;
	uint8_t *model;             /* what reads return */
	uint8_t *row;               /* the bytes under the catalog row's root */
	uint8_t *dirty;             /* per block: written since the last flush or open */
	uint64_t ndirty;            /* blocks set in dirty */
	struct ferry_id clone_root; /* the clone's committed root */
	int ro;
	int err; /* clone_discard's */
};

/* The input, read from the front; zeros once it runs out. */
struct cursor {
	const uint8_t *p;
	size_t left;
};

static uint64_t take(struct cursor *in, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++) {
		v <<= 8;
		if (in->left) {
			v |= *in->p++;
			in->left--;
		}
	}
	return v;
}

/* An offset from 3 bytes, in one of four neighbourhoods: anywhere up to
 * two blocks past the end, block aligned, around the end, or near 2^64. */
static uint64_t take_offset(struct cursor *in, const struct shadow *s, unsigned mode)
{
	uint64_t v = take(in, 3);

	switch (mode & 3) {
	case 0:
		return v % (s->size + 2 * FERRY_BLOCK_SIZE);
	case 1:
		return (v % (s->nblocks + 2)) << FERRY_BLOCK_SHIFT;
	case 2:
		return s->size - 3 * FERRY_BLOCK_SIZE + v % (5 * FERRY_BLOCK_SIZE);
	default:
		return UINT64_MAX - v % (1u << 16);
	}
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static void check_dirty(struct clone *c, const struct shadow *s)
{
	expect(clone_dirty_bytes(c) == s->ndirty * FERRY_BLOCK_SIZE);
}

static void do_write(struct clone *c, struct shadow *s, uint64_t off, size_t len, uint8_t seed,
		     unsigned opno, uint8_t *buf)
{
	uint32_t x = seed * 2654435761u + opno;
	ssize_t n;

	/* Seed 0 writes zeros: flushed, they become holes. */
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = seed ? (uint8_t)(x >> 16) : 0;
	}
	n = clone_write(c, buf, len, off);
	if (s->ro) {
		expect(n == -EROFS);
		return;
	}
	if (len == 0) {
		expect(n == 0);
		return;
	}
	if (off >= s->size) {
		expect(n == -EFBIG);
		return;
	}
	if (s->err) {
		expect(n == s->err);
		return;
	}
	size_t want = (size_t)MIN((uint64_t)len, s->size - off);
	expect(n == (ssize_t)want);
	memcpy(s->model + off, buf, want);
	for (uint64_t b = off >> FERRY_BLOCK_SHIFT; b <= (off + want - 1) >> FERRY_BLOCK_SHIFT; b++)
		if (!s->dirty[b]) {
			s->dirty[b] = 1;
			s->ndirty++;
		}
	check_dirty(c, s);
}

static void do_read(struct clone *c, const struct shadow *s, uint64_t off, size_t len, uint8_t *buf)
{
	size_t want = off >= s->size ? 0 : (size_t)MIN((uint64_t)len, s->size - off);
	ssize_t n;

	/* Bytes past the count are left alone. */
	memset(buf, 0xa5, len + 1);
	n = clone_read(c, buf, len, off);
	if (s->err && want) {
		expect(n == s->err);
		return;
	}
	expect(n == (ssize_t)want);
	expect(!want || memcmp(buf, s->model + off, want) == 0);
	expect(buf[want] == 0xa5);
}

/* Whether a dirty block overlaps [off, end). */
static int dirty_between(const struct shadow *s, uint64_t off, uint64_t end)
{
	if (off >= end)
		return 0;
	for (uint64_t b = off >> FERRY_BLOCK_SHIFT; b < s->nblocks && b << FERRY_BLOCK_SHIFT < end;
	     b++)
		if (s->dirty[b])
			return 1;
	return 0;
}

/* Which blocks of the committed map are holes the model cannot say (a
 * whole chunk keeps its zero blocks as data), so only what must hold:
 * nothing before the next data but zeros, a hole is zeros up to its
 * block's end, and an overlay block is always data. */
static void do_seek(struct clone *c, const struct shadow *s, uint64_t off, unsigned w)
{
	int whence = w % 3 == 0 ? SEEK_DATA : w % 3 == 1 ? SEEK_HOLE : SEEK_SET;
	uint64_t p = UINT64_MAX;
	int r = clone_seek(c, off, whence, &p);

	if (whence == SEEK_SET) {
		expect(r == -EINVAL);
		return;
	}
	if (off >= s->size) {
		expect(r == -ENXIO);
		return;
	}
	if (s->err) {
		expect(r == s->err);
		return;
	}
	if (whence == SEEK_DATA) {
		if (r == -ENXIO) {
			expect(all_zero(s->model + off, (size_t)(s->size - off)));
			expect(!dirty_between(s, off, s->size));
			return;
		}
		expect(r >= 0 && p >= off && p < s->size);
		expect(all_zero(s->model + off, (size_t)(p - off)));
		expect(!dirty_between(s, off, p));
		return;
	}
	expect(r >= 0 && p >= off && p <= s->size);
	if (p < s->size) {
		uint64_t b = p >> FERRY_BLOCK_SHIFT;
		uint64_t end = MIN((b + 1) << FERRY_BLOCK_SHIFT, s->size);

		expect(!s->dirty[b]);
		expect(all_zero(s->model + p, (size_t)(end - p)));
	}
}

static void clear_dirty(struct shadow *s)
{
	memset(s->dirty, 0, s->nblocks);
	s->ndirty = 0;
}

static void do_flush(struct clone *c, struct shadow *s)
{
	int r = clone_flush(c);
	struct ferry_clone_disk d;

	if (s->ro) {
		expect(r == 0);
		return;
	}
	if (s->err) {
		expect(r == s->err);
		return;
	}
	if (s->ndirty == 0) {
		expect(r == 0);
		return;
	}
	if (!ferry_id_equal(&s->clone_root, &fx.row_root[s->idx])) {
		/* Another writer moved the row: refused, nothing lost. */
		expect(r == -ESTALE);
		row_get(s->idx, &d);
		expect(ferry_id_equal(&d.root, &fx.row_root[s->idx]));
		check_dirty(c, s);
		return;
	}
	expect(r == 0);
	row_get(s->idx, &d);
	expect(ferry_id_equal(&d.base_root, &fx.base_root[s->idx]));
	expect(d.size == s->size);
	s->clone_root = fx.row_root[s->idx] = d.root;
	memcpy(s->row, s->model, s->size);
	clear_dirty(s);
	check_dirty(c, s);
	expect(clone_mtime(c) > 0);
}

/* Free, then a new clone from the row: unflushed writes are gone. */
static struct clone *reopen(struct clone *c, struct shadow *s, int ro)
{
	struct ferry_clone_disk d;
	char label[64];

	clone_free(c);
	row_get(s->idx, &d);
	expect(ferry_id_equal(&d.root, &fx.row_root[s->idx]));
	snprintf(label, sizeof(label), "fuzz/fuzz/disk%u", s->idx);
	expect(clone_new(fx.cc, ro ? NULL : fx.wv, &d, label, &c) >= 0);
	expect(clone_failover_id(c) == fx.failover_id && clone_idx(c) == s->idx);
	memcpy(s->model, s->row, s->size);
	clear_dirty(s);
	s->clone_root = d.root;
	s->ro = ro;
	s->err = 0;
	check_dirty(c, s);
	return c;
}

/* The row goes back to the point's root under the clone. */
static void steal(struct shadow *s)
{
	if (ferry_id_equal(&fx.row_root[s->idx], &fx.base_root[s->idx]))
		return;
	row_set(s->idx, &fx.base_root[s->idx]);
	memcpy(s->row, fx.base[s->idx], s->size);
}

static void discard(struct clone *c, struct shadow *s, int err)
{
	clone_discard(c, err);
	s->err = err;
	clear_dirty(s);
	check_dirty(c, s);
}

static void check_all(struct clone *c, const struct shadow *s, uint8_t *buf)
{
	expect(clone_read(c, buf, (size_t)s->size, 0) == (ssize_t)s->size);
	expect(memcmp(buf, s->model, (size_t)s->size) == 0);
}

enum {
	OP_WRITE,
	OP_SCATTER,
	OP_READ,
	OP_FLUSH,
	OP_REOPEN,
	OP_SEEK,
	OP_STEAL,
	OP_DISCARD,
};

static void run(const uint8_t *data, size_t size)
{
	struct cursor in = { data, size };
	unsigned idx = (unsigned)take(&in, 1) % NDISKS;
	struct shadow s = { .idx = idx, .size = disk_sizes[idx] };
	_cleanup_free_ uint8_t *model = NULL, *row = NULL, *dirty = NULL, *buf = NULL;
	struct clone *c = NULL;
	size_t bytes = 0;

	s.nblocks = DIV_ROUND_UP(s.size, (uint64_t)FERRY_BLOCK_SIZE);
	model = malloc(s.size);
	row = malloc(s.size);
	dirty = malloc(s.nblocks);
	/* A whole disk, or one op's bytes and a guard byte. */
	buf = malloc(MAX(s.size, (uint64_t)MAX_LEN + 1));
	expect(model && row && dirty && buf);
	s.model = model;
	s.row = row;
	s.dirty = dirty;

	/* Every input starts from the point's disk. */
	if (!ferry_id_equal(&fx.row_root[idx], &fx.base_root[idx]))
		row_set(idx, &fx.base_root[idx]);
	memcpy(s.row, fx.base[idx], s.size);
	c = reopen(NULL, &s, 0);

	for (unsigned opno = 0; opno < MAX_OPS && in.left && bytes < MAX_BYTES; opno++) {
		unsigned op = (unsigned)take(&in, 1);
		uint64_t off;
		size_t len;

		switch (op & 7) {
		case OP_WRITE:
			off = take_offset(&in, &s, op >> 3);
			len = (size_t)(take(&in, 2) % (MAX_LEN + 1));
			do_write(c, &s, off, len, (uint8_t)take(&in, 1), opno, buf);
			bytes += len;
			break;
		case OP_SCATTER: {
			/* Small writes over many blocks: the overlay's table grows. */
			uint64_t stride = (take(&in, 1) % 16 + 1) << FERRY_BLOCK_SHIFT;
			unsigned count = (unsigned)(take(&in, 2) % (MAX_SCATTER + 1));
			uint8_t seed = (uint8_t)take(&in, 1);

			off = take_offset(&in, &s, op >> 3);
			len = (size_t)(take(&in, 1) % 64 + 1);
			for (unsigned i = 0; i < count && bytes < MAX_BYTES; i++) {
				do_write(c, &s, off + i * stride, len, seed, opno + i * MAX_OPS,
					 buf);
				bytes += len;
			}
			break;
		}
		case OP_READ:
			off = take_offset(&in, &s, op >> 3);
			len = (size_t)(take(&in, 2) % (MAX_LEN + 1));
			do_read(c, &s, off, len, buf);
			bytes += len;
			break;
		case OP_FLUSH:
			do_flush(c, &s);
			break;
		case OP_REOPEN:
			c = reopen(c, &s, (op >> 3) & 1);
			break;
		case OP_SEEK:
			off = take_offset(&in, &s, op >> 3);
			do_seek(c, &s, off, op >> 5);
			break;
		case OP_STEAL:
			steal(&s);
			break;
		case OP_DISCARD:
			discard(c, &s, (op >> 3) & 1 ? -ENOENT : -EIO);
			break;
		}
	}

	/* Whatever the ops did: a clone that can flush, reading as the model
	 * before and after its last flush and a reopen. */
	if (s.ro || s.err)
		c = reopen(c, &s, 0);
	check_all(c, &s, buf);
	do_flush(c, &s);
	c = reopen(c, &s, 0);
	check_all(c, &s, buf);
	clone_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned n;

	/* Failed flushes are logged; thousands a second would drown the fuzzer. */
	log_set_max_level(-1);
	if (!top[0]) {
		const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

		snprintf(top, sizeof(top), "%s/fuzz-clone-XXXXXX", tmp);
		expect(mkdtemp(top));
		atexit(remove_top);
	}
	if (!fx.wv)
		setup();
	run(data, size);

	if (++n % 64 == 0) {
		uint64_t stored = 0;

		expect(ferry_catalog_store_bytes(ferry_vault_catalog(fx.wv), &stored) >= 0);
		if (stored > MAX_STORE_BYTES)
			teardown();
	}
	return 0;
}
