/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Segment application under crash simulation, in the spirit of SQLite's test
 * VFS. Three segments of a two-disk VM are built in memory (initial data with
 * random, zero and repeated chunks; scattered 4 KiB writes and a ZERO range;
 * longer writes, zero blocks, a TRIM and writes after the marker) while the
 * expected disk contents are tracked beside them. A reference vault applies
 * them cleanly and every point and live image is read back and compared.
 * Then, for N = 1, 2, 3, ... until a run sees no fault, a fresh vault applies
 * them with the store's blobs failing the N-th operation and every later one
 * (EIO or ENOSPC): the failed apply must report an error and leave the
 * catalog untouched; after a "restart" (the vault reopened, the fault gone,
 * an orphan pack left behind as a crash between pack and commit would) the
 * rest applies and the result is identical to the reference, also after GC.
 * GC itself crashes the same way at each of its store operations: no point
 * may lose data, and a GC after the restart must clean up. Also checked:
 * idempotent re-application, out-of-order and damaged segments, the
 * storage cost of small writes, and consistency groups: a group round's
 * marker is always a point, recorded with its round, and thinning keeps or
 * removes a round on every member together.
 */
#include "apply.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_frameHeaderSize */
#include <zstd.h>

#include "ferry/blobs.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/image.h"
#include "ferry/ingest.h"
#include "ferry/map.h"
#include "ferry/records.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "grouppoint.h"
#include "maint.h"
#include "tap.h"

#define VM "faultvm"
#define CHUNK (64u * 1024u)
#define NDISKS 2
#define NSEGS 3
#define NPOINTS 3
/* Scattered 4 KiB writes in segment 2. */
#define K_SMALL 200
#define MAX_FAULT_RUNS 5000
#define T0 (INT64_C(1790000000) * INT64_C(1000000000))
#define HOUR (INT64_C(3600) * INT64_C(1000000000))

static const char *const disk_names[NDISKS] = { "root", "data" };
/* The second disk ends inside a chunk: its last chunk is a partial one. */
static const uint64_t disk_sizes[NDISKS] = { 3u << 20, (2u << 20) + 12 * 1024 };

/* ---- deterministic PRNG (splitmix64) ---- */

static uint64_t rng_state = 0x5eed5eed12345678ull;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rnd();
		memcpy(p + i, &v, MIN((size_t)8, len - i));
	}
}

/* ---- segments and the contents they should produce ---- */

struct seg {
	void *buf;
	size_t len;
	struct ferry_segment_info info;
};

static struct seg segs[NSEGS];
static uint8_t *cur[NDISKS];                 /* contents while building */
static uint8_t *want_point[NPOINTS][NDISKS]; /* at each marker */
static uint8_t *want_work[NDISKS];           /* after the last segment */

static void snapshot_disks(uint8_t *dst[NDISKS])
{
	for (int d = 0; d < NDISKS; d++) {
		dst[d] = malloc(disk_sizes[d]);
		assert(dst[d]);
		memcpy(dst[d], cur[d], disk_sizes[d]);
	}
}

static int w_data(struct ferry_segment_writer *w, uint16_t d, uint64_t off, const void *buf,
		  uint64_t len)
{
	assert(off + len <= disk_sizes[d]);
	memcpy(cur[d] + off, buf, len);
	return ferry_segment_writer_add_data(w, d, off, buf, len);
}

static int w_zero(struct ferry_segment_writer *w, uint16_t d, uint64_t off, uint64_t len, int trim)
{
	assert(off + len <= disk_sizes[d]);
	memset(cur[d] + off, 0, len);
	return trim ? ferry_segment_writer_add_trim(w, d, off, len) :
		      ferry_segment_writer_add_zero(w, d, off, len);
}

static int begin_seg(uint64_t seq, struct ferry_segment_writer **ret)
{
	const struct ferry_id *prev = seq > 1 ? &segs[seq - 2].info.digest : NULL;
	struct ferry_segment_writer *w;
	int r = ferry_segment_writer_new(VM, seq, prev, &w);
	/* Segment 1 as an agent writes for this vault (data compressed per
	 * chunk: the frames go into the store as they are), 2 as an agent of
	 * format 1.0 does, 3 compressed per chunk of another size than the
	 * vault's (unpacked, then chunked as plain data). */
	if (r >= 0 && seq != 2)
		r = ferry_segment_writer_set_chunking(w, seq == 1 ? CHUNK : CHUNK / 4);
	for (uint16_t d = 0; r >= 0 && d < NDISKS; d++)
		r = ferry_segment_writer_add_disk(w, d, disk_names[d], disk_sizes[d]);
	if (r >= 0)
		*ret = w;
	return r;
}

static int end_seg(struct ferry_segment_writer *w, uint64_t seq)
{
	struct seg *s = &segs[seq - 1];
	int r = ferry_segment_writer_finish(w, &s->buf, &s->len, &s->info);
	ferry_segment_writer_free(w);
	return r;
}

/* Initial data: every chunk window is random, zero (written as zeros),
 * a repeated 4 KiB pattern (identical chunks: dedup), or never written;
 * plus one record that starts and ends inside chunks. */
static int build_seg1(void)
{
	struct ferry_segment_writer *w;
	int r = begin_seg(1, &w);
	if (r < 0)
		return r;
	uint8_t *buf = malloc(4 * CHUNK);
	uint8_t patterns[3][FERRY_BLOCK_SIZE];
	assert(buf);
	for (int i = 0; i < 3; i++)
		fill_random(patterns[i], FERRY_BLOCK_SIZE);
	for (uint16_t d = 0; r >= 0 && d < NDISKS; d++)
		for (uint64_t off = 0; r >= 0 && off < disk_sizes[d]; off += CHUNK) {
			size_t len = (size_t)MIN((uint64_t)CHUNK, disk_sizes[d] - off);
			switch (rnd() % 6) {
			case 0:
			case 1:
				fill_random(buf, len);
				break;
			case 2:
				memset(buf, 0, len);
				break;
			case 3:
			case 4: {
				const uint8_t *p = patterns[rnd() % 3];
				for (size_t b = 0; b < len; b += FERRY_BLOCK_SIZE)
					memcpy(buf + b, p, FERRY_BLOCK_SIZE);
				break;
			}
			default:
				continue;
			}
			r = w_data(w, d, off, buf, len);
		}
	if (r >= 0) {
		fill_random(buf, 40 * FERRY_BLOCK_SIZE);
		r = w_data(w, 0, CHUNK * 7 + 5 * FERRY_BLOCK_SIZE, buf, 40 * FERRY_BLOCK_SIZE);
	}
	free(buf);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_APP, T0);
	snapshot_disks(want_point[0]);
	return r < 0 ? (ferry_segment_writer_free(w), r) : end_seg(w, 1);
}

/* Small writes: K_SMALL scattered blocks (some hit the same block twice),
 * then a ZERO range across chunk boundaries. */
static int build_seg2(void)
{
	struct ferry_segment_writer *w;
	int r = begin_seg(2, &w);
	uint8_t blk[FERRY_BLOCK_SIZE];
	uint64_t first_block = 0;
	for (int i = 0; r >= 0 && i < K_SMALL; i++) {
		uint16_t d = (uint16_t)(rnd() % NDISKS);
		uint64_t block = rnd() % (disk_sizes[d] / FERRY_BLOCK_SIZE);
		if (i == 0)
			first_block = block;
		if (i == K_SMALL / 2) { /* rewritten in the same segment */
			d = 0;
			block = first_block;
		}
		fill_random(blk, sizeof(blk));
		r = w_data(w, d, block * FERRY_BLOCK_SIZE, blk, sizeof(blk));
	}
	if (r >= 0)
		r = w_zero(w, 0, (1u << 20) + 8 * 1024, 200 * 1024, 0);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0 + HOUR);
	if (r < 0) {
		ferry_segment_writer_free(w);
		return r;
	}
	snapshot_disks(want_point[1]);
	return end_seg(w, 2);
}

/* Longer writes, some with zero blocks inside and some chunk-aligned (one a
 * copy of a chunk stored before), a TRIM, the marker, and writes after the
 * marker that only the work map sees. */
static int build_seg3(void)
{
	struct ferry_segment_writer *w;
	int r = begin_seg(3, &w);
	uint8_t *buf = malloc(64 * FERRY_BLOCK_SIZE);
	assert(buf);
	for (int i = 0; r >= 0 && i < 30; i++) {
		uint16_t d = (uint16_t)(rnd() % NDISKS);
		uint64_t nb = disk_sizes[d] / FERRY_BLOCK_SIZE;
		uint64_t block = rnd() % nb;
		uint64_t n = MIN(1 + rnd() % 40, nb - block);
		fill_random(buf, n * FERRY_BLOCK_SIZE);
		if (i % 4 == 0)
			for (uint64_t b = 0; b < n; b += 3)
				memset(buf + b * FERRY_BLOCK_SIZE, 0, FERRY_BLOCK_SIZE);
		r = w_data(w, d, block * FERRY_BLOCK_SIZE, buf, n * FERRY_BLOCK_SIZE);
	}
	if (r >= 0) { /* two aligned chunks: fresh bytes, then disk 0's chunk 0 */
		fill_random(buf, CHUNK);
		memcpy(buf + CHUNK, want_point[0][0], CHUNK);
		r = w_data(w, 1, 4 * CHUNK, buf, 2 * CHUNK);
	}
	if (r >= 0)
		r = w_zero(w, 1, 512 * 1024, 100 * 1024, 1);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_APP, T0 + 2 * HOUR);
	snapshot_disks(want_point[2]);
	for (int i = 0; r >= 0 && i < 5; i++) {
		uint16_t d = (uint16_t)(i % NDISKS);
		uint64_t block = rnd() % (disk_sizes[d] / FERRY_BLOCK_SIZE - 4);
		fill_random(buf, 4 * FERRY_BLOCK_SIZE);
		r = w_data(w, d, block * FERRY_BLOCK_SIZE, buf, 4 * FERRY_BLOCK_SIZE);
	}
	free(buf);
	if (r < 0) {
		ferry_segment_writer_free(w);
		return r;
	}
	snapshot_disks(want_work);
	return end_seg(w, 3);
}

/* ---- vaults ---- */

static int make_vault(const char *dir, struct ferry_vault **ret)
{
	struct ferry_vault *v;
	int r = ferry_vault_create(dir, CHUNK, NULL);
	if (r < 0)
		return r;
	r = ferry_vault_open(dir, 0, &v);
	if (r < 0)
		return r;
	/* As `ferry enable-replication` registers a VM; a point at every
	 * marker so each segment cuts one. */
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm = { .state = FERRY_VM_INITIAL,
			       .crash_interval_s = 0,
			       .retention_s = 86400 * 365,
			       .created_ns = T0 - HOUR };
	snprintf(vm.name, sizeof(vm.name), "%s", VM);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s/cache", dir);
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = ferry_catalog_vm_add(c, &vm);
	for (uint16_t i = 0; r >= 0 && i < NDISKS; i++) {
		struct ferry_disk d = { .vm_id = vm.id, .idx = i };
		snprintf(d.name, sizeof(d.name), "%s", disk_names[i]);
		snprintf(d.source_path, sizeof(d.source_path), "/dev/vg/%s", disk_names[i]);
		r = ferry_catalog_disk_add(c, &d);
	}
	if (r >= 0)
		r = ferry_catalog_event_add(c, vm.id, "info", "replication enabled");
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0) {
		ferry_vault_free(v);
		return r;
	}
	*ret = v;
	return 0;
}

static int apply(struct ferry_vault *v, uint64_t seq, const void *buf, size_t len,
		 struct apply_result *res)
{
	struct apply_result dummy;
	char msg[512];
	int r = apply_segment(v, VM, seq, buf, len, res ? res : &dummy, msg, sizeof(msg));
	if (r < 0 && getenv("TEST_APPLY_VERBOSE"))
		printf("# apply %llu: %s (%s)\n", (unsigned long long)seq, strerror(-r), msg);
	return r;
}

static int apply_seg(struct ferry_vault *v, int i, struct apply_result *res)
{
	return apply(v, segs[i].info.seq, segs[i].buf, segs[i].len, res);
}

/* ---- the catalog's view of the VM, to tell "nothing changed" ---- */

struct snap_point {
	struct ferry_point p;
	struct ferry_point_disk d[NDISKS];
	size_t nd;
};

struct snap {
	struct ferry_vm vm;
	struct ferry_disk disks[NDISKS];
	size_t ndisks;
	struct snap_point pts[8];
	size_t npts;
	uint64_t nobjects, npacks, store_packs;
	struct ferry_catalog *c;
};

static int snap_disk(const struct ferry_disk *d, void *userdata)
{
	struct snap *s = userdata;
	if (s->ndisks == NDISKS)
		return -E2BIG;
	s->disks[s->ndisks++] = *d;
	return 0;
}

static int snap_point_disk(const struct ferry_point_disk *d, void *userdata)
{
	struct snap_point *sp = userdata;
	if (sp->nd == NDISKS)
		return -E2BIG;
	sp->d[sp->nd++] = *d;
	return 0;
}

static int snap_point(const struct ferry_point *p, void *userdata)
{
	struct snap *s = userdata;
	if (s->npts == ARRAY_SIZE(s->pts))
		return -E2BIG;
	struct snap_point *sp = &s->pts[s->npts++];
	sp->p = *p;
	sp->nd = 0;
	return ferry_catalog_point_disks(s->c, p->id, snap_point_disk, sp);
}

static int snap_object(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	((struct snap *)userdata)->nobjects++;
	return 0;
}

static int snap_pack(uint64_t pack, uint64_t size, uint32_t count, void *userdata)
{
	((struct snap *)userdata)->npacks++;
	return 0;
}

static int snap_store_pack(uint64_t pack, uint64_t size, void *userdata)
{
	((struct snap *)userdata)->store_packs++;
	return 0;
}

/* Store listing goes through the blobs too: take it without a fault set. */
static int take_snap(struct ferry_vault *v, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	s->c = ferry_vault_catalog(v);
	int r = ferry_catalog_vm_get(s->c, VM, &s->vm);
	if (r >= 0)
		r = ferry_catalog_disk_list(s->c, s->vm.id, snap_disk, s);
	if (r >= 0)
		r = ferry_catalog_point_list(s->c, s->vm.id, snap_point, s);
	if (r >= 0)
		r = ferry_catalog_object_list(s->c, snap_object, s);
	if (r >= 0)
		r = ferry_catalog_pack_list(s->c, snap_pack, s);
	if (r >= 0)
		r = ferry_store_list_packs(ferry_vault_store(v), snap_store_pack, s);
	return r;
}

static int same_disk(const struct ferry_disk *a, const struct ferry_disk *b)
{
	return a->idx == b->idx && strcmp(a->name, b->name) == 0 && a->size == b->size &&
	       ferry_id_equal(&a->live_root, &b->live_root) &&
	       ferry_id_equal(&a->work_root, &b->work_root);
}

static int same_point(const struct snap_point *a, const struct snap_point *b, int compare_ids)
{
	if ((compare_ids && a->p.id != b->p.id) || strcmp(a->p.name, b->p.name) != 0 ||
	    a->p.time_ns != b->p.time_ns || a->p.consistency != b->p.consistency ||
	    a->p.seq != b->p.seq || a->nd != b->nd)
		return 0;
	for (size_t i = 0; i < a->nd; i++)
		if (a->d[i].idx != b->d[i].idx || strcmp(a->d[i].name, b->d[i].name) != 0 ||
		    a->d[i].size != b->d[i].size || !ferry_id_equal(&a->d[i].root, &b->d[i].root))
			return 0;
	return 1;
}

/*
 * Whether two views agree. exact: the same vault before and after something
 * that must change nothing (object and pack counts too); otherwise two
 * vaults that should hold the same VM state (ids and packs may differ).
 */
static int snap_equal(const struct snap *a, const struct snap *b, int exact, const char *what)
{
	const char *diff = NULL;
	if (a->vm.applied_seq != b->vm.applied_seq)
		diff = "applied_seq";
	else if (!ferry_id_equal(&a->vm.applied_digest, &b->vm.applied_digest))
		diff = "applied_digest";
	else if (a->vm.state != b->vm.state || a->vm.marker_seq != b->vm.marker_seq ||
		 a->vm.marker_ns != b->vm.marker_ns)
		diff = "state or marker";
	else if (a->vm.initial_done_bytes != b->vm.initial_done_bytes ||
		 a->vm.initial_total_bytes != b->vm.initial_total_bytes)
		diff = "initial replication progress";
	else if (a->ndisks != b->ndisks)
		diff = "disk count";
	else if (a->npts != b->npts)
		diff = "point count";
	else if (exact && (a->nobjects != b->nobjects || a->npacks != b->npacks ||
			   a->store_packs != b->store_packs))
		diff = "objects or packs";
	for (size_t i = 0; !diff && i < a->ndisks; i++)
		if (!same_disk(&a->disks[i], &b->disks[i]))
			diff = "disk roots";
	for (size_t i = 0; !diff && i < a->npts; i++)
		if (!same_point(&a->pts[i], &b->pts[i], exact))
			diff = "points";
	if (diff)
		printf("# %s: %s differs\n", what, diff);
	return !diff;
}

/* ---- reading images back ---- */

static int image_matches(struct ferry_chunk_cache *cc, const struct ferry_id *root, uint64_t size,
			 const uint8_t *want, uint8_t *buf)
{
	struct ferry_image *img;
	int r = ferry_image_open(cc, root, size, &img);
	if (r < 0)
		return r;
	/* Odd-sized reads so they straddle chunk boundaries. */
	const size_t step = 3 * CHUNK / 2 + FERRY_BLOCK_SIZE;
	for (uint64_t off = 0; r >= 0 && off < size; off += step) {
		size_t len = (size_t)MIN((uint64_t)step, size - off);
		ssize_t n = ferry_image_read(img, buf, len, off);
		if (n < 0)
			r = (int)n;
		else if ((size_t)n != len || memcmp(buf, want + off, len) != 0)
			r = -EIO;
	}
	ferry_image_free(img);
	return r;
}

/* Every point (npoints of them), the live and the work image against the
 * tracked contents, as of the first nsegs segments applied. */
static int images_ok(struct ferry_vault *v, int nsegs, size_t npoints, const char *what)
{
	struct snap s;
	struct ferry_chunk_cache *cc;
	int r = take_snap(v, &s);
	if (r < 0)
		return r;
	if (s.npts != npoints || s.ndisks != NDISKS) {
		printf("# %s: %zu points, %zu disks\n", what, s.npts, s.ndisks);
		return -EIO;
	}
	/* Large enough for every chunk: points share most of theirs. */
	r = ferry_chunk_cache_new(v, 32u << 20, &cc);
	if (r < 0)
		return r;
	uint8_t *buf = malloc(2 * CHUNK);
	assert(buf);
	/* A point is cut by the marker of its segment: that says what it holds. */
	for (size_t p = 0; r >= 0 && p < s.npts; p++) {
		uint64_t seq = s.pts[p].p.seq;
		if (seq < 1 || seq > (uint64_t)nsegs || s.pts[p].nd != NDISKS) {
			printf("# %s: point %s of segment %llu\n", what, s.pts[p].p.name,
			       (unsigned long long)seq);
			r = -EIO;
		}
		for (size_t d = 0; r >= 0 && d < NDISKS; d++) {
			r = image_matches(cc, &s.pts[p].d[d].root, s.pts[p].d[d].size,
					  want_point[seq - 1][s.pts[p].d[d].idx], buf);
			if (r < 0)
				printf("# %s: point %s disk %zu: %s\n", what, s.pts[p].p.name, d,
				       strerror(-r));
		}
	}
	for (size_t d = 0; r >= 0 && d < NDISKS; d++) {
		const struct ferry_disk *k = &s.disks[d];
		r = image_matches(cc, &k->live_root, k->size, want_point[nsegs - 1][k->idx], buf);
		if (r >= 0)
			r = image_matches(cc, &k->work_root, k->size,
					  nsegs == NSEGS ? want_work[k->idx] :
							   want_point[nsegs - 1][k->idx],
					  buf);
		if (r < 0)
			printf("# %s: live/work image of disk %zu: %s\n", what, d, strerror(-r));
	}
	free(buf);
	ferry_chunk_cache_free(cc);
	return r;
}

/* After GC the store holds exactly the packs the catalog knows. */
static int store_matches_catalog(struct ferry_vault *v)
{
	struct snap s;
	int r = take_snap(v, &s);
	if (r < 0)
		return r;
	if (s.npacks != s.store_packs) {
		printf("# catalog knows %llu packs, store holds %llu\n",
		       (unsigned long long)s.npacks, (unsigned long long)s.store_packs);
		return -EIO;
	}
	return 0;
}

/* ---- fault injection ---- */

struct fault {
	unsigned n;       /* fail the n-th operation and every later one; 0: never */
	unsigned count;   /* operations seen */
	int err, put_err; /* what failed operations return */
	int first_err;    /* what the first failed operation returned */
	unsigned fired;
	char op[16];
	char name[64];
};

static int fault_cb(const char *op, const char *name, void *ud)
{
	struct fault *f = ud;
	f->count++;
	if (f->n == 0 || f->count < f->n)
		return 0;
	int err = strcmp(op, "put") == 0 ? f->put_err : f->err;
	if (!f->fired++) {
		snprintf(f->op, sizeof(f->op), "%s", op);
		snprintf(f->name, sizeof(f->name), "%s", name ? name : "");
		f->first_err = err;
	}
	return err;
}

/*
 * What a crash between a pack's put and the catalog commit leaves: a whole,
 * valid pack the catalog never heard of. Its objects share ids with objects
 * the vault does index elsewhere, so GC must go by pack, not by id.
 */
static int leave_orphan(struct ferry_vault *v)
{
	struct ferry_pack_writer *w;
	int r = ferry_store_pack_begin(ferry_vault_store(v), &w);
	if (r < 0)
		return r;
	for (int d = 0; r >= 0 && d < NDISKS; d++) {
		struct ferry_id id;
		struct ferry_loc loc;
		ferry_sha256(want_point[0][d], CHUNK, &id);
		r = ferry_pack_writer_add(w, FERRY_OBJ_CHUNK, &id, want_point[0][d], CHUNK, &loc);
	}
	if (r >= 0)
		r = ferry_pack_writer_finish(w);
	ferry_pack_writer_free(w);
	return r;
}

static char *tmpdir;

static void rm_rf(const char *path)
{
	char *cmd;
	if (asprintf(&cmd, "rm -rf '%s'", path) >= 0) {
		if (system(cmd) != 0)
			printf("# could not remove %s\n", path);
		free(cmd);
	}
}

/* Reference state, for comparison with every recovered vault. */
static struct snap ref;

/*
 * One crash run. Returns 1 when no fault fired (the loop is done), 0 after a
 * checked crash and recovery, -1 on a failed check (already reported).
 */
static int fault_run(unsigned n)
{
	char dir[512];
	struct ferry_vault *v = NULL;
	/* Full disks fail puts; make ENOSPC the put error of every other run. */
	struct fault f = { .n = n,
			   .err = n % 3 == 0 ? -ENOSPC : -EIO,
			   .put_err = n % 2 == 0 ? -ENOSPC : -EIO };
	int failed_at = -1, bad = 0, r;

	snprintf(dir, sizeof(dir), "%s/fault-%u", tmpdir, n);
	r = make_vault(dir, &v);
	if (r < 0) {
		ok_r(r, "N=%u: make vault", n);
		return -1;
	}
	ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), fault_cb, &f);
	for (int i = 0; i < NSEGS; i++) {
		struct snap before, after;
		/* The listing in take_snap must not count as an operation. */
		ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), NULL, NULL);
		r = take_snap(v, &before);
		ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), fault_cb, &f);
		if (r < 0) {
			ok_r(r, "N=%u: snapshot", n);
			bad = 1;
			break;
		}
		r = apply_seg(v, i, NULL);
		if (!f.fired) {
			if (r < 0) {
				ok_r(r, "N=%u: segment %d applies with no fault fired", n, i + 1);
				bad = 1;
				break;
			}
			continue;
		}
		/* The fault fired during this apply: it must fail, and cleanly. */
		ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), NULL, NULL);
		if (r >= 0) {
			ok(0, "N=%u: segment %d fails when %s %s fails with %s", n, i + 1, f.op,
			   f.name, strerror(-f.first_err));
			bad = 1;
			break;
		}
		printf("# N=%u: %s %s failed with %s: segment %d apply returned %s\n", n, f.op,
		       f.name, strerror(-f.first_err), i + 1, strerror(-r));
		int rs = take_snap(v, &after);
		if (rs < 0 || !snap_equal(&before, &after, 1, "after a failed apply")) {
			ok(0, "N=%u: catalog and store unchanged by the failed apply", n);
			bad = 1;
		}
		/* The operator must learn that the disk is full, not just "error". */
		if (r != f.first_err) {
			ok(0, "N=%u: apply passes the store's error on (%s), got %s", n,
			   strerror(-f.first_err), strerror(-r));
			bad = 1;
		}
		failed_at = i;
		break;
	}
	if (failed_at < 0 && !bad) {
		ferry_vault_free(v);
		rm_rf(dir);
		return 1;
	}
	if (bad) {
		ferry_vault_free(v);
		return -1;
	}

	/* The restart: the fault gone, a new process opening the vault. Half
	 * the runs also find what a crash just after the pack put leaves. */
	int orphan = n % 2 == 0;
	ferry_vault_free(v);
	v = NULL;
	r = ferry_vault_open(dir, 0, &v);
	if (r >= 0 && orphan)
		r = leave_orphan(v);
	for (int i = failed_at; r >= 0 && i < NSEGS; i++)
		r = apply_seg(v, i, NULL);
	if (r < 0) {
		ok_r(r, "N=%u: after the restart, segments %d..%d apply", n, failed_at + 1, NSEGS);
		ferry_vault_free(v);
		return -1;
	}
	struct snap s;
	r = take_snap(v, &s);
	if (r < 0 || !snap_equal(&ref, &s, 0, "recovered vault")) {
		ok(0, "N=%u: recovered catalog equals the reference (points, roots, seq)", n);
		bad = 1;
	}
	r = images_ok(v, NSEGS, NPOINTS, "recovered vault");
	if (r < 0) {
		ok_r(r, "N=%u: recovered images equal the reference", n);
		bad = 1;
	}
	struct gc_result gc;
	r = maint_gc(v, &gc);
	if (r < 0) {
		ok_r(r, "N=%u: gc", n);
		bad = 1;
	} else if (orphan && gc.orphan_packs < 1) {
		ok(0, "N=%u: gc removes the orphan pack", n);
		bad = 1;
	}
	if (r >= 0 && (r = store_matches_catalog(v)) < 0) {
		ok_r(r, "N=%u: after gc the store holds exactly the catalog's packs", n);
		bad = 1;
	}
	if (r >= 0 && (r = images_ok(v, NSEGS, NPOINTS, "after gc")) < 0) {
		ok_r(r, "N=%u: images read back after gc", n);
		bad = 1;
	}
	ferry_vault_free(v);
	if (!bad)
		rm_rf(dir);
	return bad ? -1 : 0;
}

static int first_extent(const struct ferry_extent *e, void *userdata)
{
	*(struct ferry_id *)userdata = e->chunk;
	return -ECANCELED; /* one is enough */
}

/*
 * What thinning leaves for GC: a pack the catalog indexes whose objects no
 * map references (to delete), and one where a single live chunk, indexed
 * there, sits among dead ones (to rewrite).
 */
static int add_dead_packs(struct ferry_vault *v, const struct snap *s)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_id live = { { 0 } };
	int r = ferry_map_walk(ferry_vault_objsrc(v), &s->disks[0].live_root,
			       DIV_ROUND_UP(s->disks[0].size, FERRY_BLOCK_SIZE), NULL, first_extent,
			       &live);
	if (r != -ECANCELED)
		return r < 0 ? r : -ENOENT;
	void *live_buf;
	size_t live_len;
	r = ferry_vault_read_object(v, &live, &live_buf, &live_len);
	if (r < 0)
		return r;
	uint8_t *junk = malloc(CHUNK);
	assert(junk);
	r = ferry_catalog_begin(c);
	for (int p = 0; r >= 0 && p < 2; p++) {
		struct ferry_pack_writer *w;
		r = ferry_store_pack_begin(ferry_vault_store(v), &w);
		if (r < 0)
			break;
		for (int i = 0; r >= 0 && i < 3; i++) {
			struct ferry_id id;
			struct ferry_loc loc;
			fill_random(junk, CHUNK);
			ferry_sha256(junk, CHUNK, &id);
			r = ferry_pack_writer_add(w, FERRY_OBJ_CHUNK, &id, junk, CHUNK, &loc);
			if (r >= 0)
				r = ferry_catalog_object_put(c, &id, &loc);
		}
		if (r >= 0 && p == 1) {
			struct ferry_loc loc;
			r = ferry_pack_writer_add(w, FERRY_OBJ_CHUNK, &live, live_buf, live_len,
						  &loc);
			if (r >= 0)
				r = ferry_catalog_object_delete(c, &live);
			if (r >= 0)
				r = ferry_catalog_object_put(c, &live, &loc);
		}
		if (r >= 0)
			r = ferry_pack_writer_finish(w);
		if (r >= 0)
			r = ferry_catalog_pack_add(c, ferry_pack_writer_id(w),
						   ferry_pack_writer_bytes(w),
						   ferry_pack_writer_count(w), 0);
		ferry_pack_writer_free(w);
	}
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	free(junk);
	free(live_buf);
	return r;
}

/*
 * GC crashing at its M-th store operation, for M = 1, 2, ... until a GC runs
 * through. The base vault holds all three segments with the first point
 * deleted, a dead pack, a mostly dead pack and an orphan pack. Right after a failed
 * GC, with no repair, every remaining point must still read back; after a
 * restart a second GC must succeed and leave exactly the catalog's packs.
 */
static void gc_fault_runs(void)
{
	char base[512], dir[600], *cmd;
	struct ferry_vault *v;
	struct gc_result gc;
	int r;

	snprintf(base, sizeof(base), "%s/gc-base", tmpdir);
	r = make_vault(base, &v);
	for (int i = 0; r >= 0 && i < NSEGS; i++)
		r = apply_seg(v, i, NULL);
	struct snap s;
	if (r >= 0)
		r = take_snap(v, &s);
	struct ferry_catalog *c = ferry_vault_catalog(v);
	if (r >= 0)
		r = ferry_catalog_begin(c);
	if (r >= 0) {
		r = ferry_catalog_point_delete(c, s.pts[0].p.id);
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	if (r >= 0)
		r = add_dead_packs(v, &s);
	if (r >= 0)
		r = leave_orphan(v);
	if (r >= 0)
		r = images_ok(v, NSEGS, NPOINTS - 1, "gc base");
	ferry_vault_free(v);
	ok_r(r, "gc base vault: 3 segments, first point deleted, dead packs, an orphan pack");
	if (r < 0)
		return;

	/* First without faults: GC must delete the orphan and nothing else. */
	snprintf(dir, sizeof(dir), "%s/gc-clean", tmpdir);
	if (asprintf(&cmd, "cp -a '%s' '%s'", base, dir) < 0 || system(cmd) != 0) {
		ok(0, "copy of the gc base vault");
		return;
	}
	free(cmd);
	r = ferry_vault_open(dir, 0, &v);
	if (r >= 0)
		r = maint_gc(v, &gc);
	ok_r(r, "gc of the base vault");
	if (r >= 0) {
		ok(gc.packs_deleted == 1 && gc.packs_rewritten == 1,
		   "gc deletes the dead pack and rewrites the mostly dead one (%llu, %llu)",
		   (unsigned long long)gc.packs_deleted, (unsigned long long)gc.packs_rewritten);
		ok(gc.orphan_packs == 1,
		   "gc deletes the one orphan pack and not the pack it just rewrote into "
		   "(%llu deleted as orphans)",
		   (unsigned long long)gc.orphan_packs);
		ok_r(store_matches_catalog(v), "gc: the store holds exactly the catalog's packs");
		ok_r(images_ok(v, NSEGS, NPOINTS - 1, "after gc"),
		     "gc: remaining points, live and work images read back");
	}
	ferry_vault_free(v);
	rm_rf(dir);

	unsigned m, crashes = 0, failures = 0;
	int done = 0;
	for (m = 1; m <= MAX_FAULT_RUNS && !done && failures < 5; m++) {
		snprintf(dir, sizeof(dir), "%s/gc-%u", tmpdir, m);
		if (asprintf(&cmd, "cp -a '%s' '%s'", base, dir) < 0 || system(cmd) != 0) {
			ok(0, "copy of the gc base vault");
			return;
		}
		free(cmd);
		struct fault f = { .n = m, .err = m % 2 ? -EIO : -ENOSPC, .put_err = -ENOSPC };
		int bad = 0;
		r = ferry_vault_open(dir, 0, &v);
		if (r < 0) {
			ok_r(r, "M=%u: open", m);
			return;
		}
		ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), fault_cb, &f);
		r = maint_gc(v, &gc);
		ferry_blobs_set_fault(ferry_store_blobs(ferry_vault_store(v)), NULL, NULL);
		if (!f.fired) {
			/* Checked in depth above; here only that the count ran out. */
			ok_r(r, "M=%u: gc with no fault fired", m);
			done = 1;
			ferry_vault_free(v);
			rm_rf(dir);
			break;
		}
		printf("# M=%u: %s %s failed with %s: gc returned %s\n", m, f.op, f.name,
		       strerror(-f.first_err), strerror(-r));
		if (r >= 0) {
			ok(0, "M=%u: gc fails when %s %s fails", m, f.op, f.name);
			bad = 1;
		}
		/* No repair yet: the interrupted GC must not have cost any data. */
		if ((r = images_ok(v, NSEGS, NPOINTS - 1, "after a failed gc")) < 0) {
			ok_r(r, "M=%u: every point reads back after a failed gc", m);
			bad = 1;
		}
		ferry_vault_free(v);
		r = ferry_vault_open(dir, 0, &v);
		if (r >= 0)
			r = maint_gc(v, &gc);
		if (r >= 0)
			r = store_matches_catalog(v);
		if (r >= 0)
			r = images_ok(v, NSEGS, NPOINTS - 1, "after gc again");
		if (r < 0) {
			ok_r(r, "M=%u: after a restart gc succeeds and the vault reads back", m);
			bad = 1;
		}
		ferry_vault_free(v);
		if (bad)
			failures++;
		else {
			crashes++;
			rm_rf(dir);
		}
	}
	ok(done && failures == 0,
	   "gc crashing at each of %u store operations loses nothing, and gc after a "
	   "restart cleans up",
	   crashes);
	rm_rf(base);
}

/* ---- the reference run, with idempotence and refusal checks ---- */

static int same_as(struct ferry_vault *v, const struct snap *before, const char *what)
{
	struct snap now;
	return take_snap(v, &now) >= 0 && snap_equal(before, &now, 1, what);
}

static void flip_checks(struct ferry_vault *v, int i, const struct snap *before)
{
	const struct seg *s = &segs[i];
	uint8_t *copy = malloc(s->len);
	assert(copy);
	const size_t where[] = {
		0, 9, 40, s->len / 2, s->len - 40, s->len - 1, (size_t)(rnd() % s->len)
	};
	for (size_t k = 0; k < ARRAY_SIZE(where); k++) {
		memcpy(copy, s->buf, s->len);
		copy[where[k]] ^= 0x10;
		int r = apply(v, s->info.seq, copy, s->len, NULL);
		ok(r == -EBADMSG, "segment %d with byte %zu flipped: -EBADMSG (got %d)", i + 1,
		   where[k], r);
	}
	ok(apply(v, s->info.seq, s->buf, s->len - 1, NULL) == -EBADMSG,
	   "segment %d truncated by one byte: -EBADMSG", i + 1);

	/* A DATAZ frame that does not unpack, behind a digest that checks (a
	 * broken agent): its first block's type made the reserved one. */
	struct ferry_segment *parsed;
	int have = 0;
	if (ferry_segment_parse(s->buf, s->len, &parsed) >= 0) {
		struct ferry_record rec;
		for (uint32_t k = 0; !have && k < ferry_segment_info(parsed)->nrecords; k++)
			have = ferry_segment_record(parsed, k, &rec) >= 0 &&
			       rec.type == FERRY_REC_DATAZ;
		uint8_t *at = have ? memmem(s->buf, s->len, rec.frame, rec.frame_len) : NULL;
		if (at) {
			memcpy(copy, s->buf, s->len);
			size_t fhs = ZSTD_frameHeaderSize(rec.frame, rec.frame_len);
			copy[(at - (uint8_t *)s->buf) + fhs] |= 0x06;
			struct ferry_id d;
			ferry_sha256(copy, s->len - 40, &d);
			memcpy(copy + s->len - 40, d.b, 32);
			ok(apply(v, s->info.seq, copy, s->len, NULL) == -EBADMSG,
			   "segment %d with a frame that does not unpack: -EBADMSG", i + 1);
		}
		ferry_segment_free(parsed);
	}
	ok(same_as(v, before, "after damaged segments"), "damaged segment %d changed nothing",
	   i + 1);
	free(copy);
}

static void reference_run(void)
{
	char dir[512];
	struct ferry_vault *v;
	struct apply_result res;
	struct snap s0, s1, s2;
	int r;

	snprintf(dir, sizeof(dir), "%s/reference", tmpdir);
	r = make_vault(dir, &v);
	ok_r(r, "reference vault created, VM registered");
	if (r < 0)
		return;

	ok_r(take_snap(v, &s0), "snapshot of the empty VM");
	ok(apply_seg(v, 2, NULL) == -ESTALE, "segment 3 before 1: -ESTALE");
	ok(apply_seg(v, 1, NULL) == -ESTALE, "segment 2 before 1: -ESTALE");
	flip_checks(v, 0, &s0);
	ok(same_as(v, &s0, "after refused segments"), "refused segments changed nothing");

	memset(&res, 0, sizeof(res));
	r = apply_seg(v, 0, &res);
	ok_r(r, "segment 1 applies");
	ok(res.seq == 1 && res.markers == 1 && res.points == 1 && !res.already_applied,
	   "segment 1: one marker, one point");
	ok_r(images_ok(v, 1, 1, "after segment 1"), "images after segment 1");

	ok_r(take_snap(v, &s1), "snapshot after segment 1");
	ok(s1.vm.applied_seq == 1 && s1.vm.state == FERRY_VM_PROTECTED, "VM protected at seq 1");
	ok(apply_seg(v, 2, NULL) == -ESTALE, "segment 3 before 2: -ESTALE");
	ok(apply(v, 3, segs[1].buf, segs[1].len, NULL) == -ESTALE, "segment 2 named as 3: -ESTALE");
	ok(apply(v, 2, segs[2].buf, segs[2].len, NULL) == -ESTALE, "segment 3 named as 2: -ESTALE");
	flip_checks(v, 1, &s1);
	ok(same_as(v, &s1, "after refused segments"), "refused segments changed nothing");

	memset(&res, 0, sizeof(res));
	r = apply_seg(v, 1, &res);
	ok_r(r, "segment 2 applies");
	ok(res.seq == 2 && res.markers == 1 && res.points == 1 && !res.already_applied,
	   "segment 2: one marker, one point");
	ok(res.data_bytes == (uint64_t)K_SMALL * FERRY_BLOCK_SIZE, "segment 2: %llu data bytes",
	   (unsigned long long)res.data_bytes);
	/* Small writes stay small: blocks packed into shared chunks, plus the
	 * map nodes on the paths to them. */
	const uint64_t allowance = 96 * 1024;
	const uint64_t limit = (uint64_t)(1.2 * K_SMALL * FERRY_BLOCK_SIZE) + allowance;
	ok(res.stored_bytes > 0 && res.stored_bytes <= limit,
	   "%d scattered 4 KiB writes stored in %llu bytes (limit %llu)", K_SMALL,
	   (unsigned long long)res.stored_bytes, (unsigned long long)limit);
	ok_r(images_ok(v, 2, 2, "after segment 2"), "images after segment 2");

	ok_r(take_snap(v, &s2), "snapshot after segment 2");
	memset(&res, 0, sizeof(res));
	r = apply_seg(v, 1, &res);
	ok(r >= 0 && res.already_applied, "segment 2 again: success, already applied");
	memset(&res, 0, sizeof(res));
	r = apply_seg(v, 0, &res);
	ok(r >= 0 && res.already_applied, "segment 1 again: success, already applied");
	ok(same_as(v, &s2, "after re-applying"), "re-applied segments changed nothing");
	flip_checks(v, 2, &s2);

	memset(&res, 0, sizeof(res));
	r = apply_seg(v, 2, &res);
	ok_r(r, "segment 3 applies");
	ok(res.seq == 3 && res.markers == 1 && res.points == 1, "segment 3: one marker, one point");
	ok_r(images_ok(v, NSEGS, NPOINTS, "reference"),
	     "reference: every point, live and work image "
	     "reads back as written");
	ok_r(take_snap(v, &ref), "reference snapshot");
	ok(ref.npts == NPOINTS && ref.vm.applied_seq == 3 && ref.vm.marker_seq == 3,
	   "reference: 3 points, applied and marker seq 3");
	ok(!ferry_id_equal(&ref.disks[0].live_root, &ref.disks[0].work_root),
	   "writes after the marker reach the work map only");

	struct gc_result gc;
	ok_r(maint_gc(v, &gc), "gc of the reference vault");
	ok_r(store_matches_catalog(v), "reference: store and catalog agree on packs");
	ok_r(images_ok(v, NSEGS, NPOINTS, "reference after gc"), "reference images after gc");
	struct snap after_gc;
	ok(take_snap(v, &after_gc) >= 0 && snap_equal(&ref, &after_gc, 0, "reference after gc"),
	   "gc keeps points and roots");
	ferry_vault_free(v);
	rm_rf(dir);
}

/* ---- GC beside a writer (the ingest protocol, ingest.h) ---- */

static uint8_t race_chunk[CHUNK];
static struct ferry_id race_new; /* committed by the hook, after the snapshot */
static int race_hook_ran;

/* An ingest of one whole chunk into a map of its own, committed with no
 * rows: an object that no root references. dedup 0: stored again even
 * where the vault has it. */
static int ingest_chunk(struct ferry_vault *v, const uint8_t *buf, int dedup, struct ferry_id *ret)
{
	struct ferry_ingest *in = NULL;
	struct ferry_map *m = NULL;
	struct ferry_id null = { { 0 } };
	int r = ferry_ingest_new(v, &in);
	if (r >= 0 && !dedup)
		ferry_ingest_no_vault_dedup(in);
	if (r >= 0)
		r = ferry_map_open(ferry_ingest_objsrc(in), &null, CHUNK / FERRY_BLOCK_SIZE, &m);
	if (r >= 0)
		r = ferry_ingest_write(in, m, 0, buf, CHUNK / FERRY_BLOCK_SIZE);
	if (r >= 0)
		r = ferry_ingest_commit(in, NULL, NULL);
	ferry_map_free(m);
	ferry_ingest_free(in);
	if (r >= 0)
		ferry_sha256(buf, CHUNK, ret);
	return r;
}

/* Between GC's snapshot and its sweep: a new pack is committed, and a pack
 * whose only object is dead in the snapshot gets that object reused. */
static int race_hook(struct ferry_vault *v)
{
	struct ferry_id again;
	uint8_t fresh[CHUNK];
	fill_random(fresh, sizeof(fresh));
	race_hook_ran = 1;
	int r = ingest_chunk(v, fresh, 0, &race_new);
	return r < 0 ? r : ingest_chunk(v, race_chunk, 1, &again);
}

static void gc_beside_writer(void)
{
	char dir[512];
	struct ferry_vault *v;
	struct gc_result gc = { 0 };
	struct ferry_id dead;
	void *buf = NULL;
	size_t len;

	snprintf(dir, sizeof(dir), "%s/gc-race", tmpdir);
	int r = make_vault(dir, &v);
	for (int i = 0; r >= 0 && i < NSEGS; i++)
		r = apply_seg(v, i, NULL);
	fill_random(race_chunk, sizeof(race_chunk));
	if (r >= 0)
		r = ingest_chunk(v, race_chunk, 0, &dead);
	ok_r(r, "a vault with a pack that no root references");
	if (r < 0)
		return;
	gc_after_snapshot_hook = race_hook;
	r = maint_gc(v, &gc);
	gc_after_snapshot_hook = NULL;
	ok_r(r, "gc with a writer committing between its snapshot and its sweep");
	ok(race_hook_ran, "the writer ran between snapshot and sweep");
	ok(gc.packs_skipped >= 1,
	   "the dead pack whose object was reused after the snapshot is left alone (%llu skipped)",
	   (unsigned long long)gc.packs_skipped);
	r = ferry_vault_read_object(v, &race_new, &buf, &len);
	ok_r(r, "the pack committed after the snapshot survives and reads back");
	free(buf);
	buf = NULL;
	r = ferry_vault_read_object(v, &dead, &buf, &len);
	ok(r >= 0 && len == CHUNK && memcmp(buf, race_chunk, CHUNK) == 0,
	   "the reused object survives and reads back");
	free(buf);
	ok_r(store_matches_catalog(v), "the store holds exactly the catalog's packs");
	ok_r(images_ok(v, NSEGS, NPOINTS, "after gc beside a writer"), "images read back");
	/* A second run has no writer beside it: now the unreferenced packs go. */
	r = maint_gc(v, &gc);
	ok(r >= 0 && gc.packs_deleted >= 2 && gc.packs_skipped == 0,
	   "the next gc drops both unreferenced packs (%llu deleted)",
	   (unsigned long long)gc.packs_deleted);
	ok(ferry_vault_read_object(v, &race_new, &buf, &len) == -ENOENT,
	   "and their objects are gone");
	ok_r(images_ok(v, NSEGS, NPOINTS, "after the second gc"), "images read back");
	ferry_vault_free(v);
}

/* ---- point ids and marker times ---- */

struct names {
	char v[16][40];
	int64_t t[16];
	size_t n;
};

static int note_name(const struct ferry_point *p, void *userdata)
{
	struct names *nm = userdata;
	if (nm->n < ARRAY_SIZE(nm->v)) {
		memcpy(nm->v[nm->n], p->name, sizeof(nm->v[0]));
		nm->t[nm->n++] = p->time_ns;
	}
	return 0;
}

/* Segment seq of VM with both disks declared and a marker at each time. */
static int marker_seg(uint64_t seq, const struct ferry_id *prev, const int64_t *times, size_t n,
		      struct seg *ret)
{
	struct ferry_segment_writer *w;
	int r = ferry_segment_writer_new(VM, seq, prev, &w);
	for (uint16_t d = 0; r >= 0 && d < NDISKS; d++)
		r = ferry_segment_writer_add_disk(w, d, disk_names[d], disk_sizes[d]);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, times[i]);
	if (r >= 0)
		r = ferry_segment_writer_finish(w, &ret->buf, &ret->len, &ret->info);
	ferry_segment_writer_free(w);
	return r;
}

/* Twelve points in one second get ids that sort in time order as strings
 * (…Z-0009 before …Z-0010); a point from the store with an absurd time
 * makes no marker arithmetic overflow. */
static void point_ids(void)
{
	char dir[512];
	struct ferry_vault *v;
	snprintf(dir, sizeof(dir), "%s/ids", tmpdir);
	int r = make_vault(dir, &v);
	ok_r(r, "a vault for point ids");
	if (r < 0)
		return;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int64_t times[12];
	for (size_t i = 0; i < ARRAY_SIZE(times); i++)
		times[i] = T0 + (int64_t)i * 1000; /* the same second */
	struct seg s1 = { 0 }, s2 = { 0 };
	r = marker_seg(1, NULL, times, ARRAY_SIZE(times), &s1);
	if (r >= 0)
		r = apply(v, 1, s1.buf, s1.len, NULL);
	ok_r(r, "a segment with 12 markers in one second applies");
	struct names nm = { 0 };
	struct ferry_vm vm;
	ferry_catalog_vm_get(c, VM, &vm);
	ferry_catalog_point_list(c, vm.id, note_name, &nm);
	int sorted = nm.n == ARRAY_SIZE(times);
	for (size_t i = 1; sorted && i < nm.n; i++)
		sorted = strcmp(nm.v[i - 1], nm.v[i]) < 0 && nm.t[i - 1] < nm.t[i];
	ok(sorted, "12 ids in one second sort as strings in time order (%s ... %s)", nm.v[0],
	   nm.n ? nm.v[nm.n - 1] : "");
	ok(nm.n == 12 && strlen(nm.v[1]) == 16 + 5 && strcmp(nm.v[1] + 16, "-0002") == 0 &&
		   strcmp(nm.v[11] + 16, "-0012") == 0,
	   "suffixes are zero padded: %s, %s", nm.v[1], nm.n == 12 ? nm.v[11] : "");

	free(s1.buf);
	ferry_vault_free(v);

	/* The only point (as ferry attach could bring from a store) at the
	 * far end of time, and a policy of one point per 5 minutes: the next
	 * marker's distance to it saturates instead of wrapping round. */
	snprintf(dir, sizeof(dir), "%s/ids-far", tmpdir);
	r = make_vault(dir, &v);
	ok_r(r, "a vault for a point at the end of time");
	if (r < 0)
		return;
	c = ferry_vault_catalog(v);
	ferry_catalog_vm_get(c, VM, &vm);
	vm.crash_interval_s = 300;
	struct ferry_point old = { .vm_id = vm.id,
				   .time_ns = INT64_MIN + 1,
				   .seq = 1,
				   .consistency = FERRY_CONSISTENCY_CRASH };
	snprintf(old.name, sizeof(old.name), "ancient");
	struct ferry_point_disk pd = { .idx = 0, .size = disk_sizes[0] };
	snprintf(pd.name, sizeof(pd.name), "%s", disk_names[0]);
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = ferry_catalog_vm_update(c, &vm);
	if (r >= 0)
		r = ferry_catalog_point_add(c, &old, &pd, 1);
	r = r >= 0 ? ferry_catalog_commit(c) : (ferry_catalog_rollback(c), r);
	ok_r(r, "a point at INT64_MIN and a 300 s interval");
	struct apply_result res = { 0 };
	r = marker_seg(1, NULL, times, 1, &s2);
	if (r >= 0)
		r = apply(v, 1, s2.buf, s2.len, &res);
	ok(r >= 0 && res.points == 1,
	   "a marker centuries after the only point is a point (%u), not a wrapped-round "
	   "negative distance",
	   res.points);
	free(s2.buf);
	ferry_vault_free(v);
}

/* ---- consistency groups ---- */

struct round_list {
	uint64_t rounds[32];
	size_t n, ordinary;
	struct ferry_id record; /* of the last group point */
};

static int note_round(const struct ferry_point *p, void *userdata)
{
	struct round_list *rl = userdata;
	if (!p->group_round) {
		rl->ordinary++;
		return 0;
	}
	if (rl->n < ARRAY_SIZE(rl->rounds))
		rl->rounds[rl->n++] = p->group_round;
	rl->record = p->record;
	return 0;
}

static struct round_list rounds_of(struct ferry_catalog *c, int64_t vm_id)
{
	struct round_list rl = { 0 };
	ferry_catalog_point_list(c, vm_id, note_round, &rl);
	return rl;
}

/* Adds a point straight into the catalog, as apply or attach would. */
static int put_point(struct ferry_catalog *c, int64_t vm_id, int64_t t, uint64_t round)
{
	struct ferry_point p = { .vm_id = vm_id,
				 .time_ns = t,
				 .seq = 1,
				 .consistency = FERRY_CONSISTENCY_CRASH,
				 .group_round = round };
	struct ferry_point_disk pd = { .idx = 0, .size = disk_sizes[0] };
	snprintf(pd.name, sizeof(pd.name), "%s", disk_names[0]);
	return ferry_catalog_point_add(c, &p, &pd, 1);
}

static int add_member(struct ferry_catalog *c, const char *name, const char *group,
		      int64_t retention_s, int64_t *ret_id)
{
	struct ferry_vm vm = { .state = FERRY_VM_PROTECTED,
			       .crash_interval_s = 300,
			       .retention_s = retention_s,
			       .created_ns = T0 };
	snprintf(vm.name, sizeof(vm.name), "%s", name);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "/nowhere");
	int r = ferry_catalog_vm_add(c, &vm);
	if (r >= 0 && group)
		r = ferry_catalog_resource_set(c, vm.id, "group", group);
	if (r >= 0)
		*ret_id = vm.id;
	return r;
}

static int rounds_are(const struct round_list *rl, const uint64_t *want, size_t n)
{
	if (rl->n != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (rl->rounds[i] != want[i])
			return 0;
	return 1;
}

static void group_points(void)
{
	char dir[512];
	struct ferry_vault *v;
	snprintf(dir, sizeof(dir), "%s/group", tmpdir);
	int r = make_vault(dir, &v);
	ok_r(r, "a vault for group points");
	if (r < 0)
		return;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	ferry_catalog_vm_get(c, VM, &vm);
	vm.crash_interval_s = 300;
	ok_r(ferry_catalog_vm_update(c, &vm), "a point at most every 300 s");

	/* Markers 10 s apart: only the first and the group round's cut. */
	const int64_t s = INT64_C(1000000000);
	struct ferry_segment_writer *w;
	struct seg sg = { 0 };
	r = ferry_segment_writer_new(VM, 1, NULL, &w);
	for (uint16_t d = 0; r >= 0 && d < NDISKS; d++)
		r = ferry_segment_writer_add_disk(w, d, disk_names[d], disk_sizes[d]);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0 + 10 * s);
	if (r >= 0)
		r = ferry_segment_writer_add_group_marker(w, FERRY_CONSISTENCY_CRASH, T0 + 20 * s,
							  29833338);
	if (r >= 0)
		r = ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0 + 30 * s);
	if (r >= 0)
		r = ferry_segment_writer_finish(w, &sg.buf, &sg.len, &sg.info);
	ferry_segment_writer_free(w);
	struct apply_result res = { 0 };
	if (r >= 0)
		r = apply(v, 1, sg.buf, sg.len, &res);
	free(sg.buf);
	ok(r >= 0 && res.points == 2 && res.markers == 4,
	   "4 markers within 300 s: the first and the group round's are points (%u)", res.points);
	struct round_list rl = rounds_of(c, vm.id);
	ok(rl.n == 1 && rl.rounds[0] == 29833338 && rl.ordinary == 1,
	   "the group point carries its round, the other none");
	void *buf = NULL;
	size_t len;
	struct ferry_record_point pr = { 0 };
	r = ferry_vault_read_object(v, &rl.record, &buf, &len);
	if (r >= 0)
		r = ferry_record_point_decode(buf, len, &pr);
	ok(r >= 0 && pr.group_round == 29833338 && len > 13 &&
		   memcmp(buf, "FERRYREC 1.1 ", 13) == 0,
	   "its POINT record in the store says the round (record 1.1), for ferry attach");
	ferry_record_point_done(&pr);
	free(buf);

	/*
	 * Thinning. Group "g": a retains 3 h, b 10 h. Rounds 1-3 in one hour,
	 * 5 h ago; a also has an ordinary point later in that hour; round 4
	 * an hour ago on both; round 6, 12 h ago, on both; round 5, later in
	 * the hour of 1-3, on a only: no group point, an ordinary point of a,
	 * which must not take that hour's place from round 3. Alone, a would
	 * lose every point older than 3 h and keep its ordinary point over
	 * round 3; b would keep round 3: no point of that hour on both.
	 */
	const int64_t hour = 3600 * s;
	const int64_t now = (T0 / hour + 100) * hour;
	const int64_t h5 = now - 5 * hour;
	int64_t a, b, lone;
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = add_member(c, "a", "g", 3 * 3600, &a);
	if (r >= 0)
		r = add_member(c, "b", "g", 10 * 3600, &b);
	if (r >= 0)
		r = add_member(c, "lone", NULL, 3600, &lone);
	const int64_t round_t[] = { h5,         h5 + 600 * s,  h5 + 1200 * s,
				    now - hour, h5 + 1500 * s, now - 12 * hour };
	for (uint64_t k = 0; r >= 0 && k < ARRAY_SIZE(round_t); k++) {
		r = put_point(c, a, round_t[k], k + 1);
		if (r >= 0 && k + 1 != 5)
			r = put_point(c, b, round_t[k], k + 1);
	}
	if (r >= 0)
		r = put_point(c, a, h5 + 1800 * s, 0);
	/* A VM's newest point stays, even a group point past retention. */
	if (r >= 0)
		r = put_point(c, lone, now - 20 * hour, 9);
	r = r >= 0 ? ferry_catalog_commit(c) : (ferry_catalog_rollback(c), r);
	ok_r(r, "two members, a lone VM, their points");
	unsigned deleted = 0;
	ok_r(maint_thin(v, now, &deleted), "thin");
	struct round_list ra = rounds_of(c, a), rb = rounds_of(c, b), rlone = rounds_of(c, lone);
	const uint64_t want[] = { 3, 4 }, want_lone[] = { 9 };
	ok(rounds_are(&rb, want, ARRAY_SIZE(want)) && rounds_are(&ra, want, ARRAY_SIZE(want)),
	   "every member keeps rounds 3 and 4 (b's 10 h retention and the newest group point "
	   "of each hour, for a too), 1, 2 and 6 go on both (a: %zu rounds, b: %zu)",
	   ra.n, rb.n);
	ok(ra.ordinary == 1 && rounds_of(c, vm.id).n == 1,
	   "a's ordinary points are its own series: round 5 went by a's 3 h, its newest "
	   "ordinary point stayed; the first VM is untouched");
	ok(rounds_are(&rlone, want_lone, 1), "a VM's only point stays past its retention");
	ok(deleted == 7, "7 points removed (%u)", deleted);

	/* Past the longest retention of the members, a round goes from all. */
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = put_point(c, a, now - 11 * hour, 7);
	if (r >= 0)
		r = put_point(c, b, now - 11 * hour, 7);
	r = r >= 0 ? ferry_catalog_commit(c) : (ferry_catalog_rollback(c), r);
	ok(r >= 0 && maint_thin(v, now + 2 * hour, &deleted) == 0 && rounds_of(c, a).n == 2 &&
		   rounds_of(c, b).n == 2,
	   "past b's retention too, round 7 goes from both, 3 stays on both");

	/* The group points of g: rounds 3 and 4; a round on a alone is none. */
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = put_point(c, a, now - 30 * s, 8);
	r = r >= 0 ? ferry_catalog_commit(c) : (ferry_catalog_rollback(c), r);
	struct grouppoint_set *g = NULL;
	const struct grouppoint_round *gr = NULL;
	char msg[512];
	ok(r >= 0 && grouppoint_load(c, "g", &g) == 0 && g->nmembers == 2 && g->nrounds == 3 &&
		   g->rounds[0].complete && g->rounds[1].complete && !g->rounds[2].complete &&
		   g->rounds[2].have == 1,
	   "group g: two members, rounds 3 and 4 complete, 8 not");
	ok(g && grouppoint_find(g, "latest", &gr, msg, sizeof(msg)) == 0 && gr->round == 4,
	   "latest is round 4, not the newer incomplete 8");
	ok(g && grouppoint_find(g, "latest-app-consistent", &gr, msg, sizeof(msg)) == -ENOENT,
	   "no app-consistent group point: %s", msg);
	char long_id[48];
	grouppoint_long_id(g ? g->rounds[0].time_ns : 0, 3, long_id, sizeof(long_id));
	ok(g && grouppoint_find(g, g->rounds[0].id, &gr, msg, sizeof(msg)) == 0 && gr->round == 3 &&
		   strlen(g->rounds[0].id) == 16 &&
		   grouppoint_find(g, long_id, &gr, msg, sizeof(msg)) == 0 && gr->round == 3,
	   "round 3 by its id %s and by its long form %s", g ? g->rounds[0].id : "", long_id);
	ok(g && grouppoint_find(g, g->rounds[2].id, &gr, msg, sizeof(msg)) == -ENOENT &&
		   strstr(msg, "b has no point"),
	   "round 8 is refused, naming the member without it: %s", msg);
	grouppoint_free(g);
	ok(grouppoint_load(c, "nobody", &g) == -ENOENT, "a group without members is -ENOENT");
	ferry_vault_free(v);
}

int main(void)
{
	char tmpl[] = "/tmp/ferry-test-apply-XXXXXX";
	tmpdir = mkdtemp(tmpl);
	if (!tmpdir) {
		perror("mkdtemp");
		return 1;
	}
	for (int d = 0; d < NDISKS; d++) {
		cur[d] = calloc(1, disk_sizes[d]);
		assert(cur[d]);
	}
	ok_r(build_seg1(), "segment 1 built");
	ok_r(build_seg2(), "segment 2 built");
	ok_r(build_seg3(), "segment 3 built");

	reference_run();

	/* Crash at every operation in turn, until a run goes through. */
	unsigned failures = 0, crashes = 0, n;
	int done = 0;
	for (n = 1; n <= MAX_FAULT_RUNS && !done; n++) {
		int r = fault_run(n);
		if (r == 1)
			done = 1;
		else if (r == 0)
			crashes++;
		else
			failures++;
	}
	ok(done, "operation %u is past the last one: that run saw no fault", n - 1);
	ok(failures == 0 && crashes == n - 2,
	   "%u crash points: every failed apply changed nothing, every recovery matches "
	   "the reference, gc leaves a readable vault",
	   crashes);

	gc_fault_runs();
	gc_beside_writer();
	point_ids();
	group_points();

	for (int d = 0; d < NDISKS; d++) {
		free(cur[d]);
		free(want_work[d]);
		for (int p = 0; p < NPOINTS; p++)
			free(want_point[p][d]);
	}
	for (int i = 0; i < NSEGS; i++)
		free(segs[i].buf);
	if (!tap_failed)
		rm_rf(tmpdir);
	else
		printf("# vaults of failed runs left in %s\n", tmpdir);
	return tap_done();
}
