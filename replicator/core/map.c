/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk maps as a tree of immutable content-addressed nodes (leaves of
 * run-length encoded runs, sparse inner nodes), loaded lazily into an
 * in-memory tree of decoded nodes. set() dirties the nodes on the paths it
 * touches and commit() re-encodes only those, so committing costs O(change).
 * Clean nodes sit on an LRU list (lru.h) and are evicted beyond a bound,
 * so a map of a 1 TiB disk holds only the few leaves in use. One mutex
 * guards the tree; node fetches run outside it so concurrent lookups do not
 * serialise on I/O.
 * Format: docs/format/map.md.
 */
#include "ferry/map.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"
#include "lru.h"
#include "map-internal.h"

#define LEAF_SHIFT 9u
#define FANOUT_SHIFT 9u
#define CACHE_LIMIT_DEFAULT 4096u

/* ---- node codec ---- */

static bool run_continues(const struct map_run *a, const struct map_run *b)
{
	return a->start + a->count == b->start && ferry_id_equal(&a->chunk, &b->chunk) &&
	       (uint64_t)a->chunk_block + a->count == b->chunk_block;
}

static void put_header(uint8_t *buf, unsigned kind, unsigned level, unsigned n)
{
	memcpy(buf, MAP_NODE_MAGIC, 4);
	buf[4] = (uint8_t)kind;
	buf[5] = MAP_NODE_VERSION;
	buf[6] = (uint8_t)level;
	buf[7] = 0;
	put_le16(buf + 8, (uint16_t)n);
	put_le16(buf + 10, 0);
}

size_t map_leaf_encode(const struct map_run *runs, unsigned n, uint8_t *buf)
{
	assert(n >= 1 && n <= FERRY_MAP_LEAF_BLOCKS);
	put_header(buf, MAP_NODE_KIND_LEAF, 0, n);
	uint8_t *p = buf + MAP_NODE_HEADER_SIZE;
	for (unsigned i = 0; i < n; i++, p += MAP_LEAF_ENTRY_SIZE) {
		assert(runs[i].count >= 1);
		assert(i == 0 || runs[i].start >= runs[i - 1].start + runs[i - 1].count);
		assert(i == 0 || !run_continues(&runs[i - 1], &runs[i]));
		put_le16(p, runs[i].start);
		put_le16(p + 2, runs[i].count);
		put_le32(p + 4, runs[i].chunk_block);
		memcpy(p + 8, runs[i].chunk.b, FERRY_ID_SIZE);
	}
	return (size_t)(p - buf);
}

size_t map_inner_encode(unsigned level, const uint16_t *idx, const struct ferry_id *ids, unsigned n,
			uint8_t *buf)
{
	assert(level >= 1 && level <= MAP_MAX_LEVEL);
	assert(n >= 1 && n <= FERRY_MAP_FANOUT);
	put_header(buf, MAP_NODE_KIND_INNER, level, n);
	uint8_t *p = buf + MAP_NODE_HEADER_SIZE;
	for (unsigned i = 0; i < n; i++, p += MAP_INNER_ENTRY_SIZE) {
		assert(i == 0 || idx[i] > idx[i - 1]);
		assert(!ferry_id_is_null(&ids[i]));
		put_le16(p, idx[i]);
		memcpy(p + 2, ids[i].b, FERRY_ID_SIZE);
	}
	return (size_t)(p - buf);
}

/* ret is scratch: on failure its contents are unspecified. */
int map_node_decode(const void *buf, size_t len, unsigned limit, struct map_decoded *ret)
{
	const uint8_t *b = buf;

	if (len < MAP_NODE_HEADER_SIZE || memcmp(b, MAP_NODE_MAGIC, 4) != 0)
		return -EBADMSG;
	unsigned kind = b[4], version = b[5], level = b[6], n = get_le16(b + 8);
	if (version != MAP_NODE_VERSION || b[7] != 0 || get_le16(b + 10) != 0 || n == 0)
		return -EBADMSG;

	if (kind == MAP_NODE_KIND_LEAF) {
		if (level != 0 || n > FERRY_MAP_LEAF_BLOCKS ||
		    len != MAP_NODE_HEADER_SIZE + (size_t)n * MAP_LEAF_ENTRY_SIZE)
			return -EBADMSG;
		limit = MIN(limit, FERRY_MAP_LEAF_BLOCKS);
		const uint8_t *p = b + MAP_NODE_HEADER_SIZE;
		for (unsigned i = 0; i < n; i++, p += MAP_LEAF_ENTRY_SIZE) {
			struct map_run *r = &ret->runs[i];
			r->start = get_le16(p);
			r->count = get_le16(p + 2);
			r->chunk_block = get_le32(p + 4);
			memcpy(r->chunk.b, p + 8, FERRY_ID_SIZE);
			if (r->count == 0 || (unsigned)r->start + r->count > limit ||
			    (uint64_t)r->chunk_block + r->count > UINT64_C(1) << 32 ||
			    ferry_id_is_null(&r->chunk))
				return -EBADMSG;
			if (i > 0 && (r->start < ret->runs[i - 1].start + ret->runs[i - 1].count ||
				      run_continues(&ret->runs[i - 1], r)))
				return -EBADMSG;
		}
	} else if (kind == MAP_NODE_KIND_INNER) {
		if (level < 1 || level > MAP_MAX_LEVEL || n > FERRY_MAP_FANOUT ||
		    len != MAP_NODE_HEADER_SIZE + (size_t)n * MAP_INNER_ENTRY_SIZE)
			return -EBADMSG;
		limit = MIN(limit, FERRY_MAP_FANOUT);
		const uint8_t *p = b + MAP_NODE_HEADER_SIZE;
		for (unsigned i = 0; i < n; i++, p += MAP_INNER_ENTRY_SIZE) {
			ret->idx[i] = get_le16(p);
			memcpy(ret->ids[i].b, p + 2, FERRY_ID_SIZE);
			if (ret->idx[i] >= limit || ferry_id_is_null(&ret->ids[i]) ||
			    (i > 0 && ret->idx[i] <= ret->idx[i - 1]))
				return -EBADMSG;
		}
	} else
		return -EBADMSG;

	ret->kind = kind;
	ret->level = level;
	ret->n = n;
	return 0;
}

/* ---- geometry ---- */

unsigned map_depth(uint64_t nblocks)
{
	unsigned d = 0, shift = LEAF_SHIFT;
	while (shift < 64 && (UINT64_C(1) << shift) < nblocks) {
		d++;
		shift += FANOUT_SHIFT;
	}
	return d;
}

/* log2 of the blocks covered by one child of a node at level (>= 1). */
static unsigned child_shift(unsigned level)
{
	return LEAF_SHIFT + FANOUT_SHIFT * (level - 1);
}

/* End of the blocks a node at level starting at base covers, clipped to the
 * disk; written so that a 2^72-block root of a huge disk does not overflow. */
static uint64_t node_end(uint64_t nblocks, unsigned level, uint64_t base)
{
	unsigned shift = LEAF_SHIFT + FANOUT_SHIFT * level;
	if (shift >= 64 || (UINT64_C(1) << shift) >= nblocks - base)
		return nblocks;
	return base + (UINT64_C(1) << shift);
}

/* How many blocks (leaf) or children (inner) of a node lie inside the disk. */
static unsigned node_limit(uint64_t nblocks, unsigned level, uint64_t base)
{
	uint64_t span = node_end(nblocks, level, base) - base;
	if (span == 0)
		return 0;
	if (level == 0)
		return (unsigned)span;
	return (unsigned)(((span - 1) >> child_shift(level)) + 1);
}

/* ---- in-memory tree ---- */

struct inner {
	struct ferry_id ids[FERRY_MAP_FANOUT]; /* committed ids; stale for dirty kids */
	struct node *kids[FERRY_MAP_FANOUT];   /* decoded children, NULL if not loaded */
	/* bit set: child is non-zero (loaded, or a non-null id); lets a lookup in
	 * a sparse region skip whole runs of null children at once */
	uint64_t present[FERRY_MAP_FANOUT / 64];
};

struct node {
	unsigned level;
	bool dirty;
	struct ferry_id id; /* valid while clean */
	struct node *parent;
	unsigned pidx;
	struct lru_link lru; /* on the map's list while clean and not the root */
	/* level 0 */
	struct map_run *runs;
	unsigned nruns;
	/* level >= 1 */
	struct inner *in;
};

struct ferry_map {
	const struct ferry_objsrc *src;
	uint64_t nblocks;
	unsigned depth;
	struct ferry_id root_id;
	struct node *root;
	pthread_mutex_t lock;
	/* clean non-root nodes, most recently used first */
	struct lru_list lru; /* its n counts the nodes that could be evicted */
	size_t limit;
};

static void set_present(struct inner *in, unsigned i)
{
	bool p = in->kids[i] || !ferry_id_is_null(&in->ids[i]);
	if (p)
		in->present[i / 64] |= UINT64_C(1) << (i % 64);
	else
		in->present[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

static bool is_present(const struct inner *in, unsigned i)
{
	return in->present[i / 64] & (UINT64_C(1) << (i % 64));
}

/* First present child at or after i, or FANOUT. */
static unsigned next_present(const struct inner *in, unsigned i)
{
	while (i < FERRY_MAP_FANOUT) {
		uint64_t w = in->present[i / 64] >> (i % 64);
		if (w)
			return i + (unsigned)__builtin_ctzll(w);
		i = (i / 64 + 1) * 64;
	}
	return FERRY_MAP_FANOUT;
}

/* A clean node below the root becomes the most recently used of those
 * eviction may take. */
static void make_evictable(struct ferry_map *m, struct node *n)
{
	assert(!lru_linked(&n->lru) && !n->dirty && n->parent);
	lru_list_push(&m->lru, &n->lru);
}

static struct node *node_new(unsigned level)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->level = level;
	if (level > 0) {
		n->in = calloc(1, sizeof(*n->in));
		if (!n->in) {
			free(n);
			return NULL;
		}
	}
	return n;
}

/* Frees n and its loaded subtree; the caller clears the slot that held it. */
static void node_free(struct ferry_map *m, struct node *n)
{
	if (!n)
		return;
	if (n->in)
		for (unsigned i = 0; i < FERRY_MAP_FANOUT; i++)
			node_free(m, n->in->kids[i]);
	if (m)
		lru_list_unlink(&m->lru, &n->lru);
	free(n->in);
	free(n->runs);
	free(n);
}

static void mark_dirty(struct ferry_map *m, struct node *n)
{
	lru_list_unlink(&m->lru, &n->lru);
	n->dirty = true;
}

/* A slot is where a node hangs: the root, or one child of an inner node. */
struct slot {
	struct node **node;
	struct ferry_id *id;
	struct node *parent;
	unsigned idx;
};

static struct slot root_slot(struct ferry_map *m)
{
	return (struct slot){ &m->root, &m->root_id, NULL, 0 };
}

static struct slot child_slot(struct node *n, unsigned i)
{
	return (struct slot){ &n->in->kids[i], &n->in->ids[i], n, i };
}

static void install(struct ferry_map *m, const struct slot *s, struct node *n)
{
	*s->node = n;
	n->parent = s->parent;
	n->pidx = s->idx;
	if (s->parent)
		set_present(s->parent->in, s->idx);
	if (!n->dirty && s->parent)
		make_evictable(m, n);
}

static void slot_clear(struct ferry_map *m, const struct slot *s)
{
	node_free(m, *s->node);
	*s->node = NULL;
	memset(s->id, 0, sizeof(*s->id));
	if (s->parent)
		set_present(s->parent->in, s->idx);
}

static void evict(struct ferry_map *m)
{
	struct lru_link *k;

	while (m->lru.n > m->limit && (k = lru_list_oldest(&m->lru))) {
		struct node *n = lru_container_of(k, struct node, lru);
		/* Clean nodes only have clean descendants (dirtiness runs up to the
		 * root), so the whole loaded subtree can go and reload on demand. */
		n->parent->in->kids[n->pidx] = NULL;
		node_free(m, n);
	}
}

/* Reads, verifies and decodes node id expected at (level, base). */
static int fetch(const struct ferry_objsrc *src, const struct ferry_id *id, uint64_t nblocks,
		 unsigned level, uint64_t base, struct map_decoded *dec)
{
	_cleanup_free_ void *buf = NULL;
	size_t len;
	struct ferry_id check;
	int r;

	r = src->get(src->userdata, id, &buf, &len);
	if (r < 0)
		return r;
	/* The objsrc verifies too, but a wrong node here would silently map
	 * disk blocks to the wrong bytes: the cost of a second hash is small. */
	ferry_sha256(buf, len, &check);
	if (!ferry_id_equal(&check, id))
		return -EBADMSG;
	r = map_node_decode(buf, len, node_limit(nblocks, level, base), dec);
	if (r < 0)
		return r;
	if (dec->level != level || (level == 0) != (dec->kind == MAP_NODE_KIND_LEAF))
		return -EBADMSG;
	return 0;
}

static int load(const struct ferry_objsrc *src, const struct ferry_id *id, uint64_t nblocks,
		unsigned level, uint64_t base, struct node **ret)
{
	_cleanup_free_ struct map_decoded *dec = malloc(sizeof(*dec));
	if (!dec)
		return -ENOMEM;
	int r = fetch(src, id, nblocks, level, base, dec);
	if (r < 0)
		return r;

	struct node *n = node_new(level);
	if (!n)
		return -ENOMEM;
	n->id = *id;
	if (level == 0) {
		n->runs = malloc(dec->n * sizeof(*n->runs));
		if (!n->runs) {
			node_free(NULL, n);
			return -ENOMEM;
		}
		memcpy(n->runs, dec->runs, dec->n * sizeof(*n->runs));
		n->nruns = dec->n;
	} else {
		for (unsigned i = 0; i < dec->n; i++) {
			n->in->ids[dec->idx[i]] = dec->ids[i];
			set_present(n->in, dec->idx[i]);
		}
	}
	*ret = n;
	return 0;
}

/* ---- open / free ---- */

int ferry_map_open(const struct ferry_objsrc *src, const struct ferry_id *root, uint64_t nblocks,
		   struct ferry_map **ret)
{
	assert(src && ret);
	struct ferry_map *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->src = src;
	m->nblocks = nblocks;
	m->depth = map_depth(nblocks);
	if (root)
		m->root_id = *root;
	m->limit = CACHE_LIMIT_DEFAULT;
	lru_list_init(&m->lru);
	pthread_mutex_init(&m->lock, NULL);
	*ret = m;
	return 0;
}

struct ferry_map *ferry_map_free(struct ferry_map *m)
{
	if (!m)
		return NULL;
	node_free(m, m->root);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}

uint64_t ferry_map_nblocks(const struct ferry_map *m)
{
	return m->nblocks;
}

void map_set_cache_limit(struct ferry_map *m, size_t limit)
{
	pthread_mutex_lock(&m->lock);
	m->limit = limit;
	evict(m);
	pthread_mutex_unlock(&m->lock);
}

size_t map_cached_nodes(const struct ferry_map *m)
{
	return m->lru.n;
}

/* ---- lookup ---- */

static void leaf_lookup(const struct node *n, uint64_t base, uint64_t end, uint64_t block,
			struct ferry_extent *ext)
{
	unsigned off = (unsigned)(block - base), lo = 0, hi = n->nruns;

	/* first run starting after off */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (n->runs[mid].start <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ext = (struct ferry_extent){ .block = block };
	if (lo > 0 && off < (unsigned)n->runs[lo - 1].start + n->runs[lo - 1].count) {
		const struct map_run *r = &n->runs[lo - 1];
		ext->count = r->start + r->count - off;
		ext->chunk = r->chunk;
		ext->chunk_block = r->chunk_block + (off - r->start);
	} else {
		ext->zero = 1;
		ext->count = (lo < n->nruns ? base + n->runs[lo].start : end) - block;
	}
}

/* 0: *ext is the answer. 1: the node at need_* must be loaded first (a
 * node already loaded into *pending is installed where it belongs). */
static int lookup_locked(struct ferry_map *m, uint64_t block, struct ferry_extent *ext,
			 struct node **pending, struct ferry_id *need_id, unsigned *need_level,
			 uint64_t *need_base)
{
	struct slot s = root_slot(m);
	unsigned level = m->depth;
	uint64_t base = 0;

	for (;;) {
		uint64_t end = node_end(m->nblocks, level, base);

		if (!*s.node) {
			if (ferry_id_is_null(s.id)) {
				*ext = (struct ferry_extent){ .block = block,
							      .count = end - block,
							      .zero = 1 };
				return 0;
			}
			if (*pending && (*pending)->level == level &&
			    ferry_id_equal(&(*pending)->id, s.id))
				install(m, &s, TAKE_PTR(*pending));
			else {
				*need_id = *s.id;
				*need_level = level;
				*need_base = base;
				return 1;
			}
		}

		struct node *n = *s.node;
		lru_list_touch(&m->lru, &n->lru);
		if (level == 0) {
			leaf_lookup(n, base, end, block, ext);
			return 0;
		}

		unsigned cs = child_shift(level);
		unsigned i = (unsigned)((block - base) >> cs);
		if (!is_present(n->in, i)) {
			unsigned j = next_present(n->in, i + 1);
			uint64_t zend = j < node_limit(m->nblocks, level, base) ?
						base + ((uint64_t)j << cs) :
						end;
			*ext = (struct ferry_extent){ .block = block,
						      .count = zend - block,
						      .zero = 1 };
			return 0;
		}
		s = child_slot(n, i);
		base += (uint64_t)i << cs;
		level--;
	}
}

int ferry_map_lookup(struct ferry_map *m, uint64_t block, struct ferry_extent *ret)
{
	struct node *pending = NULL;
	struct ferry_extent ext;
	int r;

	if (block >= m->nblocks)
		return -ERANGE;

	pthread_mutex_lock(&m->lock);
	for (;;) {
		struct ferry_id id;
		unsigned level;
		uint64_t base;

		r = lookup_locked(m, block, &ext, &pending, &id, &level, &base);
		if (r == 0)
			break;
		node_free(m, TAKE_PTR(pending));
		pthread_mutex_unlock(&m->lock);
		/* Fetch without the lock: other lookups proceed meanwhile. The
		 * tree may change (eviction), so the walk restarts from the root
		 * and installs the node wherever it still belongs. */
		r = load(m->src, &id, m->nblocks, level, base, &pending);
		if (r < 0)
			return r;
		pthread_mutex_lock(&m->lock);
	}
	node_free(m, pending);
	evict(m);
	pthread_mutex_unlock(&m->lock);

	*ret = ext;
	return 0;
}

/* ---- set ---- */

/* Loads the nodes a set of [s, e) only partly covers (at most two per
 * level), before anything changes, so a failed fetch leaves the map as it
 * was. Fully covered subtrees are replaced without being read. */
static int set_prepare(struct ferry_map *m, struct slot sl, unsigned level, uint64_t base,
		       uint64_t s, uint64_t e)
{
	uint64_t end = node_end(m->nblocks, level, base);
	int r;

	if (s <= base && e >= end)
		return 0;
	if (!*sl.node) {
		if (ferry_id_is_null(sl.id))
			return 0;
		struct node *n;
		r = load(m->src, sl.id, m->nblocks, level, base, &n);
		if (r < 0)
			return r;
		install(m, &sl, n);
	}
	if (level == 0)
		return 0;

	unsigned cs = child_shift(level);
	unsigned first = (unsigned)((MAX(s, base) - base) >> cs);
	unsigned last = (unsigned)((MIN(e, end) - 1 - base) >> cs);
	r = set_prepare(m, child_slot(*sl.node, first), level - 1, base + ((uint64_t)first << cs),
			s, e);
	if (r < 0 || last == first)
		return r;
	return set_prepare(m, child_slot(*sl.node, last), level - 1, base + ((uint64_t)last << cs),
			   s, e);
}

/* Maps leaf-relative blocks [ls, le) to chunk from cb, or to zero. */
static int leaf_set(struct node *n, unsigned ls, unsigned le, const struct ferry_id *chunk,
		    uint32_t cb)
{
	struct map_run *out = malloc((n->nruns + 2) * sizeof(*out));
	unsigned k = 0;

	if (!out)
		return -ENOMEM;
	for (unsigned i = 0; i < n->nruns; i++) {
		const struct map_run *r = &n->runs[i];
		if (r->start < ls) {
			out[k] = *r;
			out[k++].count =
				(uint16_t)(MIN((unsigned)r->start + r->count, ls) - r->start);
		}
	}
	if (chunk)
		out[k++] = (struct map_run){ .start = (uint16_t)ls,
					     .count = (uint16_t)(le - ls),
					     .chunk_block = cb,
					     .chunk = *chunk };
	for (unsigned i = 0; i < n->nruns; i++) {
		const struct map_run *r = &n->runs[i];
		unsigned rend = (unsigned)r->start + r->count;
		if (rend > le) {
			unsigned ns = MAX(r->start, le);
			out[k] = *r;
			out[k].start = (uint16_t)ns;
			out[k].count = (uint16_t)(rend - ns);
			out[k++].chunk_block = r->chunk_block + (ns - r->start);
		}
	}

	/* canonical form: merge runs that continue each other */
	unsigned j = 0;
	for (unsigned i = 0; i < k; i++) {
		if (j > 0 && run_continues(&out[j - 1], &out[i]))
			out[j - 1].count = (uint16_t)(out[j - 1].count + out[i].count);
		else
			out[j++] = out[i];
	}
	free(n->runs);
	n->runs = out;
	n->nruns = j;
	return 0;
}

static int set_apply(struct ferry_map *m, struct slot sl, unsigned level, uint64_t base, uint64_t s,
		     uint64_t e, const struct ferry_id *chunk, uint32_t cb_s)
{
	uint64_t end = node_end(m->nblocks, level, base);
	bool full = s <= base && e >= end;
	struct node *n;
	int r;

	if (full) {
		slot_clear(m, &sl);
		if (!chunk)
			return 0;
	}
	if (!*sl.node) {
		if (!ferry_id_is_null(sl.id)) {
			/* set_prepare loaded every partly covered node, and nothing
			 * is evicted during a set */
			assert(!"set_apply: partly covered node not loaded");
			return -EIO;
		}
		if (!chunk)
			return 0;
		n = node_new(level);
		if (!n)
			return -ENOMEM;
		n->dirty = true;
		install(m, &sl, n);
	}
	n = *sl.node;
	mark_dirty(m, n);

	uint64_t from = MAX(s, base), to = MIN(e, end);
	if (level == 0)
		return leaf_set(n, (unsigned)(from - base), (unsigned)(to - base), chunk,
				chunk ? (uint32_t)(cb_s + (from - s)) : 0);

	unsigned cs = child_shift(level);
	unsigned first = (unsigned)((from - base) >> cs), last = (unsigned)((to - 1 - base) >> cs);
	for (unsigned i = first; i <= last; i++) {
		r = set_apply(m, child_slot(n, i), level - 1, base + ((uint64_t)i << cs), s, e,
			      chunk, cb_s);
		set_present(n->in, i);
		if (r < 0)
			return r;
	}
	return 0;
}

int ferry_map_set(struct ferry_map *m, uint64_t block, uint64_t count, const struct ferry_id *chunk,
		  uint32_t chunk_block)
{
	int r;

	if (block > m->nblocks || count > m->nblocks - block)
		return -ERANGE;
	if (chunk && count > 0 && (uint64_t)chunk_block + count > UINT64_C(1) << 32)
		return -EINVAL;
	if (count == 0)
		return 0;
	/* A null chunk id means zero everywhere else in the format. */
	if (chunk && ferry_id_is_null(chunk))
		chunk = NULL;

	pthread_mutex_lock(&m->lock);
	r = set_prepare(m, root_slot(m), m->depth, 0, block, block + count);
	if (r >= 0)
		r = set_apply(m, root_slot(m), m->depth, 0, block, block + count, chunk,
			      chunk_block);
	evict(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* ---- commit ---- */

static int commit_node(struct ferry_map *m, struct node *n, uint8_t *buf, struct ferry_id *ret)
{
	static const struct ferry_id null;
	size_t len = 0;
	int r;

	if (!n->dirty) {
		*ret = n->id;
		return 0;
	}
	if (n->level == 0) {
		if (n->nruns > 0)
			len = map_leaf_encode(n->runs, n->nruns, buf);
	} else {
		struct inner *in = n->in;
		_cleanup_free_ uint16_t *idx = malloc(FERRY_MAP_FANOUT * sizeof(*idx));
		_cleanup_free_ struct ferry_id *ids = malloc(FERRY_MAP_FANOUT * sizeof(*ids));
		unsigned k = 0;

		if (!idx || !ids)
			return -ENOMEM;
		for (unsigned i = next_present(in, 0); i < FERRY_MAP_FANOUT;
		     i = next_present(in, i + 1)) {
			struct node *kid = in->kids[i];
			if (kid && kid->dirty) {
				struct ferry_id id;
				r = commit_node(m, kid, buf, &id);
				if (r < 0)
					return r;
				in->ids[i] = id;
				if (ferry_id_is_null(&id)) {
					node_free(m, kid);
					in->kids[i] = NULL;
				}
				set_present(in, i);
			}
			if (!ferry_id_is_null(&in->ids[i])) {
				idx[k] = (uint16_t)i;
				ids[k++] = in->ids[i];
			}
		}
		if (k > 0)
			len = map_inner_encode(n->level, idx, ids, k, buf);
	}

	struct ferry_id id = null;
	if (len > 0) {
		ferry_sha256(buf, len, &id);
		r = m->src->put(m->src->userdata, &id, buf, len);
		if (r < 0)
			return r;
	}
	n->id = id;
	n->dirty = false;
	if (n->parent && len > 0)
		make_evictable(m, n);
	*ret = id;
	return 0;
}

int ferry_map_commit(struct ferry_map *m, struct ferry_id *ret_root)
{
	int r = 0;

	pthread_mutex_lock(&m->lock);
	if (m->root) {
		_cleanup_free_ uint8_t *buf = malloc(MAP_NODE_MAX_SIZE);
		struct ferry_id id;

		if (!buf)
			r = -ENOMEM;
		else
			r = commit_node(m, m->root, buf, &id);
		if (r >= 0) {
			m->root_id = id;
			if (ferry_id_is_null(&id)) {
				node_free(m, m->root);
				m->root = NULL;
			}
		}
	}
	evict(m);
	if (r >= 0)
		*ret_root = m->root_id;
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* ---- walk ---- */

struct walk {
	const struct ferry_objsrc *src;
	uint64_t nblocks;
	int (*node_cb)(const struct ferry_id *id, void *userdata);
	int (*extent_cb)(const struct ferry_extent *e, void *userdata);
	void *userdata;
	struct map_decoded *dec; /* one per level: a parent's children outlive the child's visit */
};

static int walk_node(struct walk *w, const struct ferry_id *id, unsigned level, uint64_t base)
{
	struct map_decoded *dec = &w->dec[level];
	int r;

	if (w->node_cb) {
		r = w->node_cb(id, w->userdata);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	r = fetch(w->src, id, w->nblocks, level, base, dec);
	if (r < 0)
		return r;

	if (level == 0) {
		if (!w->extent_cb)
			return 0;
		for (unsigned i = 0; i < dec->n; i++) {
			struct ferry_extent e = {
				.block = base + dec->runs[i].start,
				.count = dec->runs[i].count,
				.chunk = dec->runs[i].chunk,
				.chunk_block = dec->runs[i].chunk_block,
			};
			r = w->extent_cb(&e, w->userdata);
			if (r < 0)
				return r;
		}
		return 0;
	}
	unsigned cs = child_shift(level);
	for (unsigned i = 0; i < dec->n; i++) {
		r = walk_node(w, &dec->ids[i], level - 1, base + ((uint64_t)dec->idx[i] << cs));
		if (r < 0)
			return r;
	}
	return 0;
}

int ferry_map_walk(const struct ferry_objsrc *src, const struct ferry_id *root, uint64_t nblocks,
		   int (*node_cb)(const struct ferry_id *id, void *userdata),
		   int (*extent_cb)(const struct ferry_extent *e, void *userdata), void *userdata)
{
	if (!root || ferry_id_is_null(root))
		return 0;

	unsigned depth = map_depth(nblocks);
	_cleanup_free_ struct map_decoded *dec = calloc(depth + 1, sizeof(*dec));
	if (!dec)
		return -ENOMEM;
	struct walk w = { src, nblocks, node_cb, extent_cb, userdata, dec };
	int r = walk_node(&w, root, depth, 0);
	return r < 0 ? r : 0;
}
