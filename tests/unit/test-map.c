/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk maps against a brute-force reference: random sets across leaf and
 * inner-node boundaries with commits and reopens in between, structure
 * sharing (a one-block change costs depth+1 puts), lazy loading on a 1 TiB
 * disk (count gets and puts), canonical encoding (same content, same root),
 * walk, corrupt nodes, eviction and concurrent lookups. Nodes live in an
 * in-memory objsrc that counts its traffic.
 */
#include "ferry/map.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"
#include "map-internal.h"
#include "tap.h"

/* ---- in-memory objsrc ---- */

#define NBUCKETS 4096

struct obj {
	struct ferry_id id;
	uint8_t *buf;
	size_t len;
	struct obj *next;
};

struct memsrc {
	struct obj *b[NBUCKETS];
	size_t nobjs, nputs, ngets;
	pthread_mutex_t lock;
	struct ferry_objsrc src;
};

static struct obj *memsrc_find(struct memsrc *s, const struct ferry_id *id)
{
	for (struct obj *o = s->b[get_le16(id->b) % NBUCKETS]; o; o = o->next)
		if (ferry_id_equal(&o->id, id))
			return o;
	return NULL;
}

static int mem_get(void *userdata, const struct ferry_id *id, void **ret_buf, size_t *ret_len)
{
	struct memsrc *s = userdata;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	s->ngets++;
	struct obj *o = memsrc_find(s, id);
	if (!o)
		r = -ENOENT;
	else {
		void *p = malloc(o->len ? o->len : 1);
		if (!p)
			r = -ENOMEM;
		else {
			memcpy(p, o->buf, o->len);
			*ret_buf = p;
			*ret_len = o->len;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int mem_put(void *userdata, const struct ferry_id *id, const void *buf, size_t len)
{
	struct memsrc *s = userdata;

	pthread_mutex_lock(&s->lock);
	s->nputs++;
	if (!memsrc_find(s, id)) {
		struct obj *o = calloc(1, sizeof(*o));
		o->id = *id;
		o->buf = malloc(len);
		memcpy(o->buf, buf, len);
		o->len = len;
		o->next = s->b[get_le16(id->b) % NBUCKETS];
		s->b[get_le16(id->b) % NBUCKETS] = o;
		s->nobjs++;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static struct memsrc *memsrc_new(void)
{
	struct memsrc *s = calloc(1, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->src = (struct ferry_objsrc){ mem_get, mem_put, s };
	return s;
}

static void memsrc_free(struct memsrc *s)
{
	for (size_t i = 0; i < NBUCKETS; i++)
		while (s->b[i]) {
			struct obj *o = s->b[i];
			s->b[i] = o->next;
			free(o->buf);
			free(o);
		}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static void memsrc_reset(struct memsrc *s)
{
	s->nputs = s->ngets = 0;
}

/* ---- reference model ---- */

#define NCHUNKS 16
static struct ferry_id chunks[NCHUNKS]; /* chunks[0] unused: index 0 means zero */

struct ref {
	uint64_t n;
	uint8_t *chunk; /* 0 = zero, else index into chunks */
	uint32_t *cb;
};

static struct ref *ref_new(uint64_t n)
{
	struct ref *r = calloc(1, sizeof(*r));
	r->n = n;
	r->chunk = calloc(n, 1);
	r->cb = calloc(n, sizeof(uint32_t));
	return r;
}

static void ref_free(struct ref *r)
{
	free(r->chunk);
	free(r->cb);
	free(r);
}

static void ref_set(struct ref *r, uint64_t block, uint64_t count, unsigned c, uint32_t cb)
{
	for (uint64_t i = 0; i < count; i++) {
		r->chunk[block + i] = (uint8_t)c;
		r->cb[block + i] = c ? cb + (uint32_t)i : 0;
	}
}

static int do_set(struct ferry_map *m, struct ref *ref, uint64_t block, uint64_t count, unsigned c,
		  uint32_t cb)
{
	int r = ferry_map_set(m, block, count, c ? &chunks[c] : NULL, cb);
	if (r >= 0)
		ref_set(ref, block, count, c, cb);
	return r;
}

static bool extent_matches(const struct ref *ref, const struct ferry_extent *e)
{
	for (uint64_t b = e->block; b < e->block + e->count; b++) {
		if (e->zero) {
			if (ref->chunk[b])
				return false;
		} else if (!ref->chunk[b] || !ferry_id_equal(&e->chunk, &chunks[ref->chunk[b]]) ||
			   ref->cb[b] != e->chunk_block + (b - e->block))
			return false;
	}
	return true;
}

/* Reads the whole map extent by extent; returns the number of defects. */
static unsigned check_full(struct ferry_map *m, const struct ref *ref)
{
	unsigned bad = 0;
	uint64_t b = 0;

	while (b < ref->n && bad < 10) {
		struct ferry_extent e;
		int r = ferry_map_lookup(m, b, &e);
		if (r < 0 || e.block != b || e.count == 0 || e.count > ref->n - b) {
			printf("#   lookup %llu: r=%d block=%llu count=%llu\n",
			       (unsigned long long)b, r, (unsigned long long)e.block,
			       (unsigned long long)e.count);
			return bad + 1;
		}
		if (!extent_matches(ref, &e)) {
			printf("#   mismatch in extent %llu+%llu zero=%d\n", (unsigned long long)b,
			       (unsigned long long)e.count, e.zero);
			bad++;
		}
		b += e.count;
	}
	return bad;
}

static unsigned check_points(struct ferry_map *m, const struct ref *ref, unsigned n)
{
	unsigned bad = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t b = (uint64_t)random() % ref->n;
		struct ferry_extent e;
		if (ferry_map_lookup(m, b, &e) < 0 || e.block != b || e.count == 0 ||
		    e.count > ref->n - b)
			bad++;
		else {
			/* the first blocks are enough for a point check */
			struct ferry_extent head = e;
			head.count = MIN(e.count, 64);
			if (!extent_matches(ref, &head))
				bad++;
		}
	}
	return bad;
}

/* Builds a map from scratch out of ref's runs. */
static int build_from_ref(struct memsrc *s, const struct ref *ref, struct ferry_id *root)
{
	struct ferry_map *m;
	int r = ferry_map_open(&s->src, NULL, ref->n, &m);
	if (r < 0)
		return r;
	for (uint64_t b = 0; b < ref->n && r >= 0;) {
		uint64_t e = b + 1;
		while (e < ref->n && ref->chunk[e] == ref->chunk[b] &&
		       (!ref->chunk[b] || ref->cb[e] == ref->cb[b] + (e - b)))
			e++;
		if (ref->chunk[b])
			r = ferry_map_set(m, b, e - b, &chunks[ref->chunk[b]], ref->cb[b]);
		b = e;
	}
	if (r >= 0)
		r = ferry_map_commit(m, root);
	ferry_map_free(m);
	return r;
}

/* ---- tests ---- */

static void test_empty(void)
{
	struct memsrc *s = memsrc_new();
	struct ferry_map *m;
	struct ferry_extent e;
	struct ferry_id root, zero = { { 0 } };

	ok_r(ferry_map_open(&s->src, NULL, 10000, &m), "open empty");
	ok(ferry_map_nblocks(m) == 10000, "nblocks");
	ok(ferry_map_lookup(m, 0, &e) == 0 && e.zero && e.block == 0 && e.count == 10000,
	   "empty map: one zero extent to the end");
	ok(ferry_map_lookup(m, 5000, &e) == 0 && e.zero && e.block == 5000 && e.count == 5000,
	   "empty map: zero extent from the middle");
	ok(ferry_map_lookup(m, 10000, &e) == -ERANGE, "lookup past the end: ERANGE");
	ok(ferry_map_set(m, 9999, 2, &chunks[1], 0) == -ERANGE, "set across the end: ERANGE");
	ok(ferry_map_set(m, 10001, 0, &chunks[1], 0) == -ERANGE, "set past the end: ERANGE");
	ok(ferry_map_set(m, 0, 2, &chunks[1], UINT32_MAX) == -EINVAL,
	   "chunk_block overflow: EINVAL");
	ok(ferry_map_set(m, 100, 50, NULL, 0) == 0, "zeroing an empty map");
	ok(ferry_map_commit(m, &root) == 0 && ferry_id_is_null(&root) && s->nputs == 0,
	   "empty commit: null root, no puts");
	ferry_map_free(m);

	ok_r(ferry_map_open(&s->src, &zero, 10000, &m), "open with all-zero root");
	ok(ferry_map_lookup(m, 1, &e) == 0 && e.zero && e.count == 9999, "all-zero root is empty");
	ferry_map_free(m);
	ok(s->ngets == 0, "empty maps never get");

	ok_r(ferry_map_open(&s->src, NULL, 0, &m), "open 0-block map");
	ok(ferry_map_lookup(m, 0, &e) == -ERANGE, "0-block map: ERANGE");
	ok(ferry_map_commit(m, &root) == 0 && ferry_id_is_null(&root), "0-block map commits null");
	ferry_map_free(m);
	memsrc_free(s);
}

static void test_basic(void)
{
	struct memsrc *s = memsrc_new();
	struct ferry_map *m;
	struct ferry_extent e;
	struct ferry_id root;

	ok_r(ferry_map_open(&s->src, NULL, 512, &m), "open one-leaf map");
	ok_r(ferry_map_set(m, 10, 10, &chunks[1], 5), "set 10+10");
	ok(ferry_map_lookup(m, 15, &e) == 0 && !e.zero && e.block == 15 && e.count == 5 &&
		   ferry_id_equal(&e.chunk, &chunks[1]) && e.chunk_block == 10,
	   "lookup inside a run starts at the block");
	ok(ferry_map_lookup(m, 0, &e) == 0 && e.zero && e.count == 10, "zero before the run");
	ok(ferry_map_lookup(m, 20, &e) == 0 && e.zero && e.count == 492, "zero after the run");

	ok_r(ferry_map_set(m, 12, 2, &chunks[2], 0), "overwrite the middle");
	ok(ferry_map_lookup(m, 10, &e) == 0 && !e.zero && e.count == 2 && e.chunk_block == 5,
	   "left piece kept");
	ok(ferry_map_lookup(m, 12, &e) == 0 && ferry_id_equal(&e.chunk, &chunks[2]) && e.count == 2,
	   "new run");
	ok(ferry_map_lookup(m, 14, &e) == 0 && ferry_id_equal(&e.chunk, &chunks[1]) &&
		   e.count == 6 && e.chunk_block == 9,
	   "right piece keeps its chunk offset");
	ok_r(ferry_map_set(m, 15, 2, NULL, 0), "punch a hole");
	ok(ferry_map_lookup(m, 14, &e) == 0 && !e.zero && e.count == 1, "before the hole");
	ok(ferry_map_lookup(m, 15, &e) == 0 && e.zero && e.count == 2, "the hole");
	ok(ferry_map_lookup(m, 17, &e) == 0 && !e.zero && e.chunk_block == 12 && e.count == 3,
	   "after the hole");
	ok_r(ferry_map_set(m, 15, 2, &chunks[1], 10), "refill the hole contiguously");
	ok_r(ferry_map_set(m, 12, 2, &chunks[1], 7), "restore the middle contiguously");
	ok(ferry_map_lookup(m, 10, &e) == 0 && e.count == 10 && e.chunk_block == 5,
	   "contiguous runs merge back into one");
	ok_r(ferry_map_commit(m, &root), "commit");
	struct obj *o = memsrc_find(s, &root);
	ok(o && o->len == MAP_NODE_HEADER_SIZE + MAP_LEAF_ENTRY_SIZE,
	   "one leaf with one run stored");
	ok_r(ferry_map_set(m, 0, 512, NULL, 0), "zero everything");
	ok(ferry_map_commit(m, &root) == 0 && ferry_id_is_null(&root), "all-zero leaf is null");
	ferry_map_free(m);

	/* nblocks = 1 */
	ok_r(ferry_map_open(&s->src, NULL, 1, &m), "open 1-block map");
	ok_r(ferry_map_set(m, 0, 1, &chunks[3], 77), "set the only block");
	ok(ferry_map_set(m, 1, 1, &chunks[3], 0) == -ERANGE, "1-block map: set past end");
	ok(ferry_map_lookup(m, 1, &e) == -ERANGE, "1-block map: lookup past end");
	ok_r(ferry_map_commit(m, &root), "commit 1-block map");
	ferry_map_free(m);
	ok_r(ferry_map_open(&s->src, &root, 1, &m), "reopen 1-block map");
	ok(ferry_map_lookup(m, 0, &e) == 0 && !e.zero && e.count == 1 && e.chunk_block == 77,
	   "1-block map reads back");
	ferry_map_free(m);

	/* nblocks not a multiple of 512: the last leaf is short */
	ok_r(ferry_map_open(&s->src, NULL, 1000, &m), "open 1000-block map");
	ok_r(ferry_map_set(m, 0, 1000, &chunks[4], 0), "fill it");
	ok(ferry_map_lookup(m, 0, &e) == 0 && e.count == 512, "runs end at leaf boundaries");
	ok(ferry_map_lookup(m, 999, &e) == 0 && e.count == 1 && e.chunk_block == 999, "last block");
	ok_r(ferry_map_set(m, 990, 10, NULL, 0), "zero the tail");
	ok(ferry_map_lookup(m, 995, &e) == 0 && e.zero && e.count == 5, "zero tail clipped");
	ok_r(ferry_map_commit(m, &root), "commit 1000-block map");
	ferry_map_free(m);
	ok_r(ferry_map_open(&s->src, &root, 1000, &m), "reopen");
	ok(ferry_map_lookup(m, 989, &e) == 0 && !e.zero && e.count == 1 && e.chunk_block == 989,
	   "reads back");
	ok(ferry_map_lookup(m, 990, &e) == 0 && e.zero && e.count == 10, "zero tail reads back");
	ferry_map_free(m);
	memsrc_free(s);
}

static uint64_t pick_start(uint64_t n)
{
	uint64_t b, unit;

	switch (random() % 4) {
	case 0: /* just before or after a leaf boundary */
		unit = 512;
		break;
	case 1: /* just before or after a level-1 boundary */
		unit = 262144;
		break;
	default:
		return (uint64_t)random() % n;
	}
	b = (uint64_t)(random() % (n / unit + 1)) * unit;
	b += (uint64_t)(random() % 16);
	b = b >= 8 ? b - 8 : 0;
	return MIN(b, n - 1);
}

static bool small_only;

static uint64_t pick_len(void)
{
	int p = (int)(random() % (small_only ? 85 : 100));
	if (p < 60)
		return 1 + (uint64_t)(random() % 16);
	if (p < 85)
		return 1 + (uint64_t)(random() % 1500);
	if (p < 95)
		return 1 + (uint64_t)(random() % 20000);
	return 1 + (uint64_t)(random() % 400000);
}

static void random_ops(struct ferry_map *m, struct ref *ref, unsigned nops, unsigned *bad)
{
	for (unsigned i = 0; i < nops; i++) {
		uint64_t b = pick_start(ref->n);
		uint64_t len = pick_len();
		len = MIN(len, ref->n - b);
		unsigned c = 0;
		uint32_t cb = 0;
		int p = (int)(random() % 100);

		if (p < 25)
			c = 0;
		else if (p < 45 && b > 0 && ref->chunk[b - 1]) {
			/* continue the previous run: exercises merging */
			c = ref->chunk[b - 1];
			cb = ref->cb[b - 1] + 1;
		} else {
			c = 1 + (unsigned)(random() % (NCHUNKS - 1));
			cb = (uint32_t)(random() % 1000);
		}
		int r = do_set(m, ref, b, len, c, cb);
		if (r < 0) {
			printf("#   set %llu+%llu chunk %u: %s\n", (unsigned long long)b,
			       (unsigned long long)len, c, strerror(-r));
			(*bad)++;
		}
	}
}

struct walk_state {
	const struct ref *ref;
	uint8_t *seen;
	uint64_t last_end;
	unsigned nodes, extents, bad;
};

static int walk_node_cb(const struct ferry_id *id, void *userdata)
{
	struct walk_state *w = userdata;
	(void)id;
	w->nodes++;
	return 0;
}

static int walk_extent_cb(const struct ferry_extent *e, void *userdata)
{
	struct walk_state *w = userdata;
	w->extents++;
	if (e->zero || e->count == 0 || e->block < w->last_end || e->block + e->count > w->ref->n ||
	    !extent_matches(w->ref, e))
		w->bad++;
	else
		memset(w->seen + e->block, 1, e->count);
	w->last_end = e->block + e->count;
	return 0;
}

/* Maximal runs of ref, split at leaf boundaries: what walk must report. */
static unsigned ref_runs(const struct ref *ref)
{
	unsigned n = 0;
	for (uint64_t b = 0; b < ref->n; b++)
		if (ref->chunk[b] && (b % 512 == 0 || ref->chunk[b - 1] != ref->chunk[b] ||
				      ref->cb[b - 1] + 1 != ref->cb[b]))
			n++;
	return n;
}

static void check_walk(struct memsrc *s, const struct ferry_id *root, const struct ref *ref)
{
	struct walk_state w = { .ref = ref, .seen = calloc(ref->n, 1) };
	int r = ferry_map_walk(&s->src, root, ref->n, walk_node_cb, walk_extent_cb, &w);
	ok_r(r, "walk");
	unsigned missed = 0;
	for (uint64_t b = 0; b < ref->n; b++)
		if (!!ref->chunk[b] != w.seen[b])
			missed++;
	ok(w.bad == 0 && missed == 0, "walk reports exactly the non-zero blocks, in order");
	ok(w.extents == ref_runs(ref), "walk reports maximal runs (%u, expected %u)", w.extents,
	   ref_runs(ref));
	ok(w.nodes > 0, "walk visited %u nodes", w.nodes);
	free(w.seen);
}

static void test_random(void)
{
	const uint64_t n = 3 * 262144 + 77; /* depth 2, ragged end */
	struct memsrc *s = memsrc_new();
	struct ref *ref = ref_new(n);
	struct ferry_map *m;
	struct ferry_id root;
	unsigned bad = 0, badcheck = 0;

	ok(map_depth(n) == 2, "depth 2");
	ok_r(ferry_map_open(&s->src, NULL, n, &m), "open");
	for (unsigned round = 0; round < 12; round++) {
		/* later rounds fragment the leaves with many small runs */
		small_only = round >= 8;
		random_ops(m, ref, round >= 8 ? 3000 : 400, &bad);
		badcheck += check_points(m, ref, 200);
		if (round % 2 == 0)
			badcheck += check_full(m, ref);
		ok_r(ferry_map_commit(m, &root), "commit round %u", round);
		badcheck += check_full(m, ref);
		ferry_map_free(m);
		ok_r(ferry_map_open(&s->src, &root, n, &m), "reopen round %u", round);
		if (round % 2)
			map_set_cache_limit(m, 3); /* constant eviction */
		badcheck += check_full(m, ref);
		ok(map_cached_nodes(m) <= (round % 2 ? 3 : 4096), "cache bounded");
	}
	small_only = false;
	ok(bad == 0, "every set succeeded");
	ok(badcheck == 0, "map equals the reference at every check");

	/* canonical encoding: same content, same root, whatever the history */
	struct ferry_id again;
	size_t before = s->nobjs;
	ok_r(build_from_ref(s, ref, &again), "rebuild from the reference");
	ok(ferry_id_equal(&again, &root), "same content gives the same root id");
	ok(s->nobjs == before, "rebuilding stores no new node");

	check_walk(s, &root, ref);

	struct walk_state w = { .ref = ref };
	ok(ferry_map_walk(&s->src, &root, n, NULL, NULL, &w) == 0, "walk without callbacks");

	ferry_map_free(m);
	ref_free(ref);
	memsrc_free(s);
}

static int skip_all(const struct ferry_id *id, void *userdata)
{
	(void)id;
	(*(unsigned *)userdata)++;
	return 1;
}

static int count_extent(const struct ferry_extent *e, void *userdata)
{
	(void)e;
	(*(unsigned *)userdata) += 1000;
	return 0;
}

static void test_sharing(void)
{
	const uint64_t n = 1u << 20; /* depth 2 */
	struct memsrc *s = memsrc_new();
	struct ref *ref = ref_new(n);
	struct ferry_map *m;
	struct ferry_id a, b, c;
	struct ferry_extent e;
	unsigned bad = 0;

	ok_r(ferry_map_open(&s->src, NULL, n, &m), "open");
	random_ops(m, ref, 300, &bad);
	ok_r(ferry_map_commit(m, &a), "commit A");
	uint8_t old_chunk = ref->chunk[123456];
	uint32_t old_cb = ref->cb[123456];

	memsrc_reset(s);
	ok_r(ferry_map_set(m, 123456, 1, &chunks[NCHUNKS - 1], 4242), "change one block");
	ok_r(ferry_map_commit(m, &b), "commit B");
	ok(s->nputs == map_depth(n) + 1, "B costs depth+1 = %u puts (got %zu)", map_depth(n) + 1,
	   s->nputs);
	ok(s->ngets == 0, "no gets for a loaded path");
	memsrc_reset(s);
	ok(ferry_map_commit(m, &c) == 0 && ferry_id_equal(&b, &c) && s->nputs == 0,
	   "clean commit: same root, no puts");
	ferry_map_free(m);

	ok_r(ferry_map_open(&s->src, &a, n, &m), "reopen A");
	ok(ferry_map_lookup(m, 123456, &e) == 0 && e.block == 123456 &&
		   (old_chunk ? !e.zero && ferry_id_equal(&e.chunk, &chunks[old_chunk]) &&
					e.chunk_block == old_cb :
				e.zero),
	   "A still reads the old value");
	ok(check_full(m, ref) == 0, "A is unchanged");
	ferry_map_free(m);
	ref_set(ref, 123456, 1, NCHUNKS - 1, 4242);
	ok_r(ferry_map_open(&s->src, &b, n, &m), "reopen B");
	ok(check_full(m, ref) == 0, "B has the change");
	ferry_map_free(m);

	unsigned calls = 0;
	ok(ferry_map_walk(&s->src, &a, n, skip_all, count_extent, &calls) == 0 && calls == 1,
	   "walk: node_cb returning 1 skips the subtree");
	ok(bad == 0, "sets succeeded");
	ref_free(ref);
	memsrc_free(s);
}

static void test_huge(void)
{
	const uint64_t n = UINT64_C(1) << 28; /* 1 TiB of 4 KiB blocks */
	const uint64_t blocks[] = { 0, 12345678, 99999999, 200000000, (UINT64_C(1) << 28) - 1 };
	struct memsrc *s = memsrc_new();
	struct ferry_map *m;
	struct ferry_id root, root2;
	struct ferry_extent e;
	int r = 0;

	ok(map_depth(n) == 3, "1 TiB: depth 3");
	ok_r(ferry_map_open(&s->src, NULL, n, &m), "open 1 TiB");
	for (size_t i = 0; i < ARRAY_SIZE(blocks); i++)
		r |= ferry_map_set(m, blocks[i], 1, &chunks[1 + i], (uint32_t)i);
	ok(r == 0, "a handful of sets");
	ok_r(ferry_map_commit(m, &root), "commit");
	ok(s->ngets == 0, "no gets on a new map");
	ok(s->nputs <= 1 + 3 * ARRAY_SIZE(blocks), "few puts (%zu)", s->nputs);
	ok(ferry_map_lookup(m, 1, &e) == 0 && e.zero && e.count == 511, "zero up to the next run");
	ok(ferry_map_lookup(m, 512, &e) == 0 && e.zero && e.count >= 262144 - 512,
	   "null subtrees give long zero extents (%llu)", (unsigned long long)e.count);
	ferry_map_free(m);

	memsrc_reset(s);
	ok_r(ferry_map_open(&s->src, &root, n, &m), "reopen");
	unsigned good = 0;
	for (size_t i = 0; i < ARRAY_SIZE(blocks); i++)
		if (ferry_map_lookup(m, blocks[i], &e) == 0 && !e.zero && e.count == 1 &&
		    ferry_id_equal(&e.chunk, &chunks[1 + i]) && e.chunk_block == i)
			good++;
	ok(good == ARRAY_SIZE(blocks), "lookups read back");
	ok(s->ngets <= 1 + 3 * ARRAY_SIZE(blocks), "lookups load only their paths (%zu gets)",
	   s->ngets);
	ok(ferry_map_lookup(m, n - 2, &e) == 0 && e.zero && e.count == 1, "zero before the last");
	ok(ferry_map_lookup(m, n, &e) == -ERANGE, "ERANGE at 1 TiB");

	memsrc_reset(s);
	ok_r(ferry_map_set(m, 150000000, 16, &chunks[9], 0), "one more set");
	ok_r(ferry_map_commit(m, &root2), "commit");
	ok(s->nputs == 4 && s->ngets <= 3, "a new path: 4 puts (%zu), few gets (%zu)", s->nputs,
	   s->ngets);

	memsrc_reset(s);
	ok_r(ferry_map_set(m, 0, n, NULL, 0), "trim the whole disk");
	ok(ferry_map_commit(m, &root2) == 0 && ferry_id_is_null(&root2), "empty again");
	ok(s->ngets == 0 && s->nputs == 0, "trim reads and writes nothing");
	ferry_map_free(m);
	memsrc_free(s);
}

static void test_corrupt(void)
{
	const uint64_t n = 5000; /* depth 1: 10 leaves */
	struct memsrc *s = memsrc_new();
	struct ferry_map *m;
	struct ferry_id root, leaf;
	struct ferry_extent e;

	ok_r(ferry_map_open(&s->src, NULL, n, &m), "open");
	ok_r(ferry_map_set(m, 0, 5000, &chunks[1], 0), "fill");
	ok_r(ferry_map_set(m, 1030, 1, &chunks[2], 0), "one more run");
	ok_r(ferry_map_commit(m, &root), "commit");
	ferry_map_free(m);

	/* find the third leaf (blocks 1024..1535) through the root */
	struct obj *ro = memsrc_find(s, &root);
	struct map_decoded *dec = malloc(sizeof(*dec));
	ok(ro && map_node_decode(ro->buf, ro->len, 10, dec) == 0 && dec->n == 10 &&
		   dec->kind == MAP_NODE_KIND_INNER,
	   "root decodes: 10 children");
	leaf = dec->ids[2];
	struct obj *lo = memsrc_find(s, &leaf);
	ok(lo != NULL, "leaf stored");
	lo->buf[MAP_NODE_HEADER_SIZE + 9] ^= 1; /* a bit of a chunk id: structurally valid */

	ok_r(ferry_map_open(&s->src, &root, n, &m), "reopen");
	ok(ferry_map_lookup(m, 1100, &e) == -EBADMSG, "corrupt leaf: EBADMSG");
	ok(ferry_map_lookup(m, 100, &e) == 0 && !e.zero, "other leaves still read");
	ok(ferry_map_set(m, 1100, 1, NULL, 0) == -EBADMSG,
	   "partial set on a corrupt leaf: EBADMSG");
	ok(ferry_map_set(m, 1024, 512, NULL, 0) == 0, "replacing it whole needs no read");
	ferry_map_free(m);
	ok(ferry_map_walk(&s->src, &root, n, NULL, NULL, NULL) == -EBADMSG, "walk: EBADMSG");
	lo->buf[MAP_NODE_HEADER_SIZE + 9] ^= 1;

	/* a valid leaf where an inner node belongs */
	ok_r(ferry_map_open(&s->src, &leaf, n, &m), "open with a leaf as root of a depth-1 map");
	ok(ferry_map_lookup(m, 0, &e) == -EBADMSG, "wrong kind: EBADMSG");
	ferry_map_free(m);
	/* a valid inner node where a leaf belongs */
	ok_r(ferry_map_open(&s->src, &root, 512, &m), "open with an inner root of a depth-0 map");
	ok(ferry_map_lookup(m, 0, &e) == -EBADMSG, "wrong kind: EBADMSG");
	ferry_map_free(m);
	/* children beyond the end of a smaller disk */
	ok_r(ferry_map_open(&s->src, &root, 1024, &m), "open with too small a size");
	ok(ferry_map_lookup(m, 0, &e) == -EBADMSG, "children past the end: EBADMSG");
	ferry_map_free(m);

	/* a truncated root */
	size_t saved = ro->len;
	ro->len -= 1;
	ok_r(ferry_map_open(&s->src, &root, n, &m), "open truncated");
	ok(ferry_map_lookup(m, 0, &e) == -EBADMSG, "truncated node: EBADMSG");
	ferry_map_free(m);
	ro->len = saved;

	struct ferry_id missing;
	ferry_sha256("nothing", 7, &missing);
	ok_r(ferry_map_open(&s->src, &missing, n, &m), "open missing root");
	ok(ferry_map_lookup(m, 0, &e) == -ENOENT, "objsrc errors pass through");
	ferry_map_free(m);
	free(dec);
	memsrc_free(s);
}

static void test_decode(void)
{
	uint8_t *buf = malloc(MAP_NODE_MAX_SIZE), *copy = malloc(MAP_NODE_MAX_SIZE);
	struct map_decoded *dec = malloc(sizeof(*dec));
	struct map_run runs[3] = {
		{ 0, 4, 0, chunks[1] },
		{ 10, 2, 7, chunks[2] },
		{ 12, 500, 0, chunks[1] },
	};
	size_t len = map_leaf_encode(runs, 3, buf);
	unsigned fails = 0;

	ok(map_node_decode(buf, len, 512, dec) == 0 && dec->n == 3 && dec->level == 0 &&
		   dec->runs[2].count == 500 && ferry_id_equal(&dec->runs[1].chunk, &chunks[2]),
	   "leaf round trip");
	ok(map_node_decode(buf, len, 511, dec) == -EBADMSG, "leaf run past the limit");
	for (size_t l = 0; l < len; l++)
		if (map_node_decode(buf, l, 512, dec) != -EBADMSG)
			fails++;
	ok(fails == 0, "every truncation fails");
	memcpy(copy, buf, len);
	copy[0] ^= 1;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "bad magic");
	memcpy(copy, buf, len);
	copy[5] = 2;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "unknown version");
	memcpy(copy, buf, len);
	copy[6] = 1;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "leaf with a level");
	memcpy(copy, buf, len);
	copy[4] = MAP_NODE_KIND_INNER;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "leaf read as inner");
	memcpy(copy, buf, len);
	put_le16(copy + MAP_NODE_HEADER_SIZE + MAP_LEAF_ENTRY_SIZE, 2); /* overlaps run 0 */
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "overlapping runs");
	memcpy(copy, buf, len);
	put_le16(copy + MAP_NODE_HEADER_SIZE + 2, 0);
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "empty run");
	memcpy(copy, buf, len);
	put_le32(copy + MAP_NODE_HEADER_SIZE + 2 * MAP_LEAF_ENTRY_SIZE + 4, 4);
	/* run 2 now continues run 0? no: it starts at 12, run 0 ends at 4 */
	ok(map_node_decode(copy, len, 512, dec) == 0, "non-adjacent runs of one chunk are fine");
	struct map_run unmerged[2] = { { 0, 4, 0, chunks[1] }, { 4, 4, 4, chunks[1] } };
	size_t ulen = map_leaf_encode(unmerged, 1, copy); /* encode one, append the other by hand */
	memcpy(copy + ulen, copy + MAP_NODE_HEADER_SIZE, MAP_LEAF_ENTRY_SIZE);
	put_le16(copy + ulen, 4);
	put_le32(copy + ulen + 4, 4);
	put_le16(copy + 8, 2);
	ok(map_node_decode(copy, ulen + MAP_LEAF_ENTRY_SIZE, 512, dec) == -EBADMSG,
	   "unmerged continuing runs are not canonical");
	memset(copy, 0, MAP_NODE_HEADER_SIZE);
	memcpy(copy, buf, MAP_NODE_HEADER_SIZE);
	put_le16(copy + 8, 0);
	ok(map_node_decode(copy, MAP_NODE_HEADER_SIZE, 512, dec) == -EBADMSG, "empty node");

	uint16_t idx[2] = { 3, 300 };
	struct ferry_id ids[2] = { chunks[5], chunks[6] };
	len = map_inner_encode(2, idx, ids, 2, buf);
	ok(map_node_decode(buf, len, 512, dec) == 0 && dec->n == 2 && dec->level == 2 &&
		   dec->idx[1] == 300 && dec->kind == MAP_NODE_KIND_INNER,
	   "inner round trip");
	ok(map_node_decode(buf, len, 300, dec) == -EBADMSG, "child past the limit");
	memcpy(copy, buf, len);
	put_le16(copy + MAP_NODE_HEADER_SIZE + MAP_INNER_ENTRY_SIZE, 3);
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "duplicate child index");
	memcpy(copy, buf, len);
	memset(copy + MAP_NODE_HEADER_SIZE + 2, 0, FERRY_ID_SIZE);
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "null child id");
	memcpy(copy, buf, len);
	copy[6] = 0;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "inner at level 0");
	memcpy(copy, buf, len);
	copy[6] = MAP_MAX_LEVEL + 1;
	ok(map_node_decode(copy, len, 512, dec) == -EBADMSG, "inner too high");
	fails = 0;
	for (size_t l = 0; l < len + 8; l++)
		if (l != len && map_node_decode(buf, l, 512, dec) != -EBADMSG)
			fails++;
	ok(fails == 0, "every wrong length fails");

	free(buf);
	free(copy);
	free(dec);
}

struct reader {
	struct ferry_map *m;
	const struct ref *ref;
	unsigned seed, bad;
};

static void *reader_thread(void *p)
{
	struct reader *rd = p;
	for (unsigned i = 0; i < 20000; i++) {
		uint64_t b = rand_r(&rd->seed) % rd->ref->n;
		struct ferry_extent e;
		if (ferry_map_lookup(rd->m, b, &e) < 0 || e.block != b || e.count == 0) {
			rd->bad++;
			continue;
		}
		e.count = MIN(e.count, 8);
		if (!extent_matches(rd->ref, &e))
			rd->bad++;
	}
	return NULL;
}

static void test_threads(void)
{
	const uint64_t n = 600000;
	struct memsrc *s = memsrc_new();
	struct ref *ref = ref_new(n);
	struct ferry_map *m;
	struct ferry_id root;
	unsigned bad = 0;

	ok_r(ferry_map_open(&s->src, NULL, n, &m), "open");
	random_ops(m, ref, 500, &bad);
	ok_r(ferry_map_commit(m, &root), "commit");
	ferry_map_free(m);
	ok_r(ferry_map_open(&s->src, &root, n, &m), "reopen");
	map_set_cache_limit(m, 16);

	pthread_t t[4];
	struct reader rd[4];
	for (unsigned i = 0; i < 4; i++) {
		rd[i] = (struct reader){ m, ref, 1000 + i, 0 };
		pthread_create(&t[i], NULL, reader_thread, &rd[i]);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		bad += rd[i].bad;
	}
	ok(bad == 0, "concurrent lookups with eviction agree with the reference");
	ok(map_cached_nodes(m) <= 16, "cache bound held");
	ferry_map_free(m);
	ref_free(ref);
	memsrc_free(s);
}

int main(void)
{
	srandom(4242);
	for (unsigned i = 1; i < NCHUNKS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "chunk %u", i);
		ferry_sha256(name, strlen(name), &chunks[i]);
	}

	test_empty();
	test_basic();
	test_decode();
	test_random();
	test_sharing();
	test_huge();
	test_corrupt();
	test_threads();
	return tap_done();
}
