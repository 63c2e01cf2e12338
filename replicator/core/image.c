/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk images read out of a vault. An image is a map (root, size); reading
 * it walks the map's runs and copies bytes out of decompressed, verified
 * chunks. The chunks live in a cache shared by every image of a reader:
 * a hash table keyed by chunk id with an LRU list (lru.h), bounded in
 * bytes. The cache's mutex covers only the table and the list; reading,
 * decompressing and verifying a chunk happen outside it, so many threads
 * make progress at once, and a chunk that one thread is already loading is
 * waited for, not loaded twice.
 *
 * Sequential readers get read-ahead: an image remembers where its last read
 * ended, and a read that starts near there queues the chunks of the next
 * window for a few background threads. Queued chunks sit in the table like
 * chunks being loaded, so nothing is loaded twice; a reader that wants one
 * nobody has started on yet loads it itself rather than wait behind the
 * queue. Random readers queue nothing. Prefetched chunks are verified like
 * any other and count against the same byte bound.
 *
 * Chunks are read here rather than through ferry_vault_read_object() for
 * two savings: decompression buffers are recycled from a pool of huge-page
 * slabs (a fresh 64 KiB malloc is a fresh page-faulting allocation once
 * glibc has trimmed its heap), and chunk locations are remembered, those of
 * chunks seen before and, on a local store, those of their pack's other
 * chunks from the pack's own index, so a load mostly skips the catalog (a
 * SQLite query, with its file locks, under the vault's lock that every
 * thread shares).
 *
 * ferry_image_read_iov() lends readers the cached chunks themselves, held
 * by a reference until released, so ferryfs writes its replies from them
 * without copying them first.
 *
 * On object storage a request costs far more than its bytes, so there a
 * prefetch thread takes a run of queued chunks at once and has the store
 * fetch those that lie back to back in one pack with one ranged GET
 * (ferry_store_read_run), which verifies each entry exactly as a single
 * read (entry checksum, size, id), so coalescing never weakens verification.
 * Everything is read through store.h: this file knows nothing of the pack
 * format or of blobs.
 *
 * GC rewrites packs under readers: it copies a pack's live chunks into a
 * newer pack, repoints the catalog, then deletes the old pack. A read of a
 * remembered location in a deleted pack (-ENOENT) forgets every location
 * remembered in that pack, asks the catalog, and reads once more.
 */
#include "ferry/image.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "lru.h"

/* Most chunks waiting for a prefetch thread; more requests are dropped. */
#define QUEUE_MAX 1024u
#define THREADS_MAX 64u
/* Defaults, measured (docs/benchmarks.md). On a local store the work is
 * decompressing and hashing: a window of 128 chunks (8 MiB of 64 KiB
 * chunks), so the threads stay ahead of a reader that asks for 1 MiB at a
 * time, and two threads (a third measured no faster). Object storage
 * answers in milliseconds and charges per request: a long window, so that
 * coalesced GETs are large, and a few threads (more only compete with the
 * server for the CPU on loopback). */
#define LOCAL_CHUNKS 128u
#define LOCAL_THREADS 2u
#define REMOTE_CHUNKS 256u
#define REMOTE_THREADS 4u
/* On object storage: chunks one prefetch thread takes at once, and the most
 * bytes one coalesced GET asks for. */
#define BATCH_MAX 32u
#define RANGE_MAX (4u << 20)
/* The kernel keeps several read-ahead requests of one file in flight and
 * they arrive in any order: a read this close to the last one's end still
 * counts as sequential. */
#define SEQ_SLACK (2ull << 20)
/* Full-size chunk buffers are carved from slabs of this size, aligned to
 * it, which the kernel may back with one huge page each. */
#define SLAB_SIZE (2u << 20)
/* Holes in zero-copy reads: as large as the largest FUSE request, so that
 * a hole is one piece. */
#define ZEROS_SIZE (1u << 20)
/* Packs whose index was read into the location memo lately. */
#define LEARNED_MAX 16u

/* A remembered chunk location. */
struct locslot {
	struct ferry_id id;
	struct ferry_loc loc;
	int valid;
};

struct centry {
	struct lru_node node; /* keyed by the chunk's id; listed only while ready and cached */
	void *buf;
	size_t len;
	size_t cap; /* of buf: what counts against the cache's bound */
	/* The table's reference counts as one while cached, the prefetch
	 * queue's as one while queued. */
	unsigned refs;
	int loading; /* not ready: others wait on cc->loaded (unless queued) */
	int queued;  /* loading, but nobody has started: the first taker loads */
	int err;     /* load failure, seen by the waiters */
	int cached;  /* in the table (and, once loaded, in the LRU list) */
};

struct ferry_chunk_cache {
	struct ferry_vault *vault;
	uint32_t chunk_size;
	size_t max_bytes;
	pthread_mutex_t lock;
	pthread_cond_t loaded;
	struct lru_table table;
	size_t bytes;

	/* Chunk-size buffers: a free list (linked through the buffers) over
	 * slabs, never returned before the cache goes, so the pool is as large
	 * as the cache was at its fullest. */
	void *pool_free;
	uint8_t *slab_next; /* the unused rest of the newest slab */
	size_t slab_left;
	void **slabs;
	size_t nslabs;
	/* The location memo: a direct-mapped table where a newer id replaces
	 * an older one. */
	struct locslot *locs;
	size_t nlocs; /* a power of two */

	int remote; /* the store is object storage: coalesce reads */
	/* What holes in zero-copy reads point at. Written once, not left to
	 * the kernel's shared zero page: pinning that page for a writev
	 * takes the slow path of get_user_pages every time. */
	uint8_t *zeros;
	/* On a local store: the packs whose index went into the memo lately
	 * (a ring), so one is read once, not by every chunk that misses. */
	uint64_t learned[LEARNED_MAX];
	unsigned nlearned, learned_next;

	/* Read-ahead, all under lock. */
	unsigned pf_chunks;  /* window in chunks; 0: off */
	unsigned pf_threads; /* threads wanted */
	unsigned nthreads;   /* threads running */
	pthread_t threads[THREADS_MAX];
	pthread_cond_t work;
	struct centry *queue[QUEUE_MAX]; /* a ring */
	size_t qhead, qlen;
	int stopping;
};

struct ferry_image {
	struct ferry_chunk_cache *cc;
	struct ferry_map *map; /* NULL for an empty disk */
	uint64_t size;
	uint64_t nblocks;
	pthread_mutex_t lock; /* the read-ahead state below */
	uint64_t next_off;    /* where the last read ended */
	uint64_t pf_off;      /* read-ahead queued up to here */
};

int ferry_chunk_cache_new(struct ferry_vault *v, size_t max_bytes, struct ferry_chunk_cache **ret)
{
	struct ferry_chunk_cache *cc;
	size_t want, n = 256;
	int remote;

	assert(v);
	assert(ret);

	cc = calloc(1, sizeof(*cc));
	if (!cc)
		return -ENOMEM;
	cc->vault = v;
	cc->chunk_size = ferry_vault_chunk_size(v);
	cc->max_bytes = max_bytes;

	/* About four buckets per full-size chunk the cache can hold; small
	 * chunks make longer chains, which stay short enough. */
	want = max_bytes / (cc->chunk_size ? cc->chunk_size : FERRY_CHUNK_SIZE_DEFAULT) * 4;
	while (n < want && n < (1u << 22))
		n <<= 1;
	if (lru_table_init(&cc->table, n) < 0) {
		free(cc);
		return -ENOMEM;
	}
	/* Eight remembered locations per chunk the cache holds: reloads of
	 * chunks evicted a while ago still skip the catalog. */
	n = 1024;
	want = MIN(want * 2, (size_t)1 << 20);
	while (n < want)
		n <<= 1;
	cc->nlocs = n;
	cc->locs = calloc(n, sizeof(*cc->locs));
	cc->zeros = malloc(ZEROS_SIZE);
	if (!cc->locs || !cc->zeros) {
		free(cc->zeros);
		free(cc->locs);
		lru_table_done(&cc->table);
		free(cc);
		return -ENOMEM;
	}
	/* Not memset: the compiler may turn malloc and memset into calloc,
	 * which leaves the pages unwritten. */
	explicit_bzero(cc->zeros, ZEROS_SIZE);
	remote = ferry_store_remote(ferry_vault_store(v));
	cc->remote = remote;
	cc->pf_chunks = remote ? REMOTE_CHUNKS : LOCAL_CHUNKS;
	cc->pf_threads = remote ? REMOTE_THREADS : LOCAL_THREADS;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->loaded, NULL);
	pthread_cond_init(&cc->work, NULL);
	*ret = cc;
	return 0;
}

int ferry_chunk_cache_set_prefetch(struct ferry_chunk_cache *cc, int chunks, int threads)
{
	assert(cc);

	if (chunks > (int)QUEUE_MAX || threads > (int)THREADS_MAX)
		return -EINVAL;
	pthread_mutex_lock(&cc->lock);
	if (chunks >= 0)
		cc->pf_chunks = (unsigned)chunks;
	if (threads >= 0)
		cc->pf_threads = (unsigned)threads;
	pthread_mutex_unlock(&cc->lock);
	return 0;
}

/* Whether buffers of cap bytes come from the pool. */
static int pooled(const struct ferry_chunk_cache *cc, size_t cap)
{
	return cc->chunk_size > 0 && cap == cc->chunk_size && cap <= SLAB_SIZE;
}

/*
 * Under cc->lock: a buffer of chunk_size bytes. Recycled ones are warm; new
 * slabs are asked to be huge pages, which fault in at once and which the
 * kernel pins cheaply when a reply is written from them, where 4 KiB pages
 * cost a fault each on first use and a pin each on every reply.
 */
static void *pool_get(struct ferry_chunk_cache *cc)
{
	void *p = cc->pool_free;

	if (p) {
		memcpy(&cc->pool_free, p, sizeof(void *));
		return p;
	}
	if (cc->slab_left < cc->chunk_size) {
		void **slabs = realloc(cc->slabs, (cc->nslabs + 1) * sizeof(*slabs));

		if (!slabs)
			return NULL;
		cc->slabs = slabs;
		p = aligned_alloc(SLAB_SIZE, SLAB_SIZE);
		if (!p)
			return NULL;
		/* Only advice: without huge pages it is memory like any other. */
		(void)madvise(p, SLAB_SIZE, MADV_HUGEPAGE);
		cc->slabs[cc->nslabs++] = p;
		cc->slab_next = p;
		cc->slab_left = SLAB_SIZE;
	}
	p = cc->slab_next;
	cc->slab_next += cc->chunk_size;
	cc->slab_left -= cc->chunk_size;
	return p;
}

/* Under cc->lock, or once no other thread is left. */
static void buf_put(struct ferry_chunk_cache *cc, void *buf, size_t cap)
{
	if (!buf)
		return;
	if (pooled(cc, cap)) {
		memcpy(buf, &cc->pool_free, sizeof(void *));
		cc->pool_free = buf;
	} else
		free(buf);
}

/* A buffer for a chunk of plen bytes, and its capacity: a full-size one
 * from the pool for all but small chunks. Without the lock. */
static void *buf_get(struct ferry_chunk_cache *cc, size_t plen, size_t *ret_cap)
{
	size_t cap = plen > cc->chunk_size / 2 ? MAX(plen, (size_t)cc->chunk_size) : plen;
	void *p;

	if (pooled(cc, cap)) {
		pthread_mutex_lock(&cc->lock);
		p = pool_get(cc);
		pthread_mutex_unlock(&cc->lock);
	} else
		p = malloc(cap);
	if (p)
		*ret_cap = cap;
	return p;
}

/* buf_put without the lock. */
static void buf_drop(struct ferry_chunk_cache *cc, void *buf, size_t cap)
{
	if (!buf)
		return;
	pthread_mutex_lock(&cc->lock);
	buf_put(cc, buf, cap);
	pthread_mutex_unlock(&cc->lock);
}

static void centry_free(struct ferry_chunk_cache *cc, struct centry *e)
{
	buf_put(cc, e->buf, e->cap);
	free(e);
}

static struct centry *centry_of(struct lru_node *n)
{
	return n ? lru_container_of(n, struct centry, node) : NULL;
}

static void free_node(struct lru_node *n, void *userdata)
{
	centry_free(userdata, centry_of(n));
}

struct ferry_chunk_cache *ferry_chunk_cache_free(struct ferry_chunk_cache *cc)
{
	if (!cc)
		return NULL;

	pthread_mutex_lock(&cc->lock);
	cc->stopping = 1;
	pthread_cond_broadcast(&cc->work);
	pthread_mutex_unlock(&cc->lock);
	for (unsigned i = 0; i < cc->nthreads; i++)
		pthread_join(cc->threads[i], NULL);
	/* Queued entries still in the table go with it below; the others
	 * (taken by a reader, then failed or evicted) live on only for the
	 * queue's reference. */
	for (; cc->qlen > 0; cc->qlen--) {
		struct centry *e = cc->queue[cc->qhead];

		cc->qhead = (cc->qhead + 1) % QUEUE_MAX;
		if (!e->cached && --e->refs == 0)
			centry_free(cc, e);
	}

	/* Every image of this cache must be gone: nothing is loading or held. */
	lru_table_clear(&cc->table, free_node, cc);
	while (cc->nslabs > 0)
		free(cc->slabs[--cc->nslabs]);
	free(cc->slabs);
	free(cc->locs);
	free(cc->zeros);
	lru_table_done(&cc->table);
	pthread_cond_destroy(&cc->work);
	pthread_cond_destroy(&cc->loaded);
	pthread_mutex_destroy(&cc->lock);
	free(cc);
	return NULL;
}

/* All of the following run with cc->lock held. */

static struct centry *table_find(struct ferry_chunk_cache *cc, const struct ferry_id *id)
{
	return centry_of(lru_table_find(&cc->table, id));
}

/* A new entry, in the table and loading, with refs references. */
static struct centry *table_add(struct ferry_chunk_cache *cc, const struct ferry_id *id,
				unsigned refs)
{
	struct centry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->node.id = *id;
	e->loading = 1;
	e->cached = 1;
	e->refs = refs;
	lru_table_insert(&cc->table, &e->node);
	return e;
}

/* Takes e out of the table, and off the LRU list if it is on it. */
static void table_remove(struct ferry_chunk_cache *cc, struct centry *e)
{
	lru_table_remove(&cc->table, &e->node);
	e->cached = 0;
}

static void centry_unref(struct ferry_chunk_cache *cc, struct centry *e)
{
	assert(e->refs > 0);
	if (--e->refs == 0)
		centry_free(cc, e);
}

/* Drops e from the cache; readers still holding it keep their copy. */
static void evict(struct ferry_chunk_cache *cc, struct centry *e)
{
	table_remove(cc, e);
	cc->bytes -= e->cap;
	centry_unref(cc, e);
}

static void release(struct ferry_chunk_cache *cc, struct centry *e)
{
	pthread_mutex_lock(&cc->lock);
	centry_unref(cc, e);
	pthread_mutex_unlock(&cc->lock);
}

void ferry_chunk_cache_drop(struct ferry_chunk_cache *cc)
{
	assert(cc);

	pthread_mutex_lock(&cc->lock);
	/* The LRU list holds exactly the loaded, cached chunks; those being
	 * loaded or queued finish as usual. */
	for (struct centry *e; (e = centry_of(lru_table_oldest(&cc->table)));)
		evict(cc, e);
	pthread_mutex_unlock(&cc->lock);
}

/* A chunk's plain bytes are whole blocks, at most one vault chunk. */
static int chunk_valid(const struct ferry_chunk_cache *cc, size_t len)
{
	if (len == 0 || len % FERRY_BLOCK_SIZE != 0)
		return 0;
	if (cc->chunk_size && len > cc->chunk_size)
		return 0;
	return 1;
}

static struct locslot *locslot_of(struct ferry_chunk_cache *cc, const struct ferry_id *id)
{
	uint64_t h;

	/* Other bytes of the id than the hash table's, so that neighbours
	 * there do not collide here too. */
	memcpy(&h, id->b + 8, sizeof(h));
	return &cc->locs[h & (cc->nlocs - 1)];
}

static int catalog_loc(struct ferry_chunk_cache *cc, const struct ferry_id *id,
		       struct ferry_loc *ret)
{
	int r;

	ferry_vault_lock(cc->vault);
	r = ferry_catalog_object_get(ferry_vault_catalog(cc->vault), id, ret);
	ferry_vault_unlock(cc->vault);
	return r;
}

static int read_at(struct ferry_chunk_cache *cc, const struct ferry_id *id,
		   const struct ferry_loc *loc, void **buf, size_t *cap)
{
	/* loc comes from the catalog, i.e. from disk: bad values are damage. */
	if (!chunk_valid(cc, loc->plen))
		return -EBADMSG;
	if (*buf && *cap < loc->plen) {
		buf_drop(cc, *buf, *cap);
		*buf = NULL;
	}
	if (!*buf) {
		*buf = buf_get(cc, loc->plen, cap);
		if (!*buf)
			return -ENOMEM;
	}
	return ferry_store_read(ferry_vault_store(cc->vault), loc, id, *buf, loc->plen);
}

/* Grows *p (of *cap elements of size) to hold at least want. */
static int reserve(void *pp, size_t *cap, size_t want, size_t size)
{
	void **p = pp;
	size_t n = MAX(*cap * 2, (size_t)32);
	void *q;

	if (want <= *cap)
		return 0;
	n = MAX(n, want);
	q = realloc(*p, n * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

struct learning {
	struct locslot *slots;
	size_t n, cap;
};

static int learn_one(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct learning *l = userdata;

	if (loc->type != FERRY_OBJ_CHUNK)
		return 0;
	if (reserve(&l->slots, &l->cap, l->n + 1, sizeof(*l->slots)) < 0)
		return -ENOMEM;
	l->slots[l->n++] = (struct locslot){ .id = *id, .loc = *loc, .valid = 1 };
	return 0;
}

/*
 * After the catalog placed a chunk in pack, on a local store: puts where
 * every chunk of that pack lies into the location memo, from the pack's own
 * index (one small read), so the chunks read next, which were mostly
 * written together, skip the catalog and its lock. An entry the catalog
 * has since moved elsewhere still holds the right bytes while its pack
 * lives, and every read is verified; a deleted pack costs a retry through
 * the catalog. Best effort: a failure here only leaves the memo as it was.
 */
static void learn_pack(struct ferry_chunk_cache *cc, uint64_t pack)
{
	struct learning l = {};
	int r;

	if (cc->remote)
		return;
	pthread_mutex_lock(&cc->lock);
	for (unsigned i = 0; i < cc->nlearned; i++)
		if (cc->learned[i] == pack) {
			pthread_mutex_unlock(&cc->lock);
			return;
		}
	/* Claimed before it is read: another thread missing in the same
	 * pack meanwhile asks the catalog rather than read it again. */
	cc->learned[cc->learned_next] = pack;
	cc->learned_next = (cc->learned_next + 1) % LEARNED_MAX;
	cc->nlearned = MIN(cc->nlearned + 1, LEARNED_MAX);
	pthread_mutex_unlock(&cc->lock);

	r = ferry_store_pack_index(ferry_vault_store(cc->vault), pack, 0, learn_one, &l);
	if (r >= 0) {
		pthread_mutex_lock(&cc->lock);
		for (size_t i = 0; i < l.n; i++)
			*locslot_of(cc, &l.slots[i].id) = l.slots[i];
		pthread_mutex_unlock(&cc->lock);
	}
	free(l.slots);
}

/*
 * After a read found pack gone (GC rewrote it: its live chunks are in a
 * newer pack, and the catalog says where): forgets every location
 * remembered in it, so that the reads that would have used them ask the
 * catalog at once rather than fail against the store first, and sets *gone
 * for the caller's other stale locations at hand. One scan of the memo per
 * deleted pack a reader meets.
 */
static void forget_pack(struct ferry_chunk_cache *cc, uint64_t pack, uint64_t *gone)
{
	pthread_mutex_lock(&cc->lock);
	for (size_t i = 0; i < cc->nlocs; i++)
		if (cc->locs[i].valid && cc->locs[i].loc.pack == pack)
			cc->locs[i].valid = 0;
	/* Pack ids are never 0. */
	for (unsigned i = 0; i < cc->nlearned; i++)
		if (cc->learned[i] == pack)
			cc->learned[i] = 0;
	pthread_mutex_unlock(&cc->lock);
	*gone = pack;
}

/*
 * Without the lock: the slow part. hint, if not NULL, is where the chunk
 * was last found, unless it lies in *gone, a pack a read found deleted
 * lately; *ret_loc is where it was found now. Every read is verified by the
 * store, so a stale hint costs a retry, never wrong bytes.
 */
static int load(struct ferry_chunk_cache *cc, const struct ferry_id *id,
		const struct ferry_loc *hint, uint64_t *gone, void **ret_buf, size_t *ret_cap,
		struct ferry_loc *ret_loc)
{
	int from_hint = hint && hint->pack != *gone;
	struct ferry_loc loc, fresh;
	void *buf = NULL;
	size_t cap = 0;
	int r;

	if (from_hint)
		loc = *hint;
	else {
		/* Not seen before, or its pack is gone. */
		r = catalog_loc(cc, id, &loc);
		if (r < 0)
			return r;
		learn_pack(cc, loc.pack);
	}
	r = read_at(cc, id, &loc, &buf, &cap);
	if (r == -ENOENT)
		forget_pack(cc, loc.pack, gone);
	if (r < 0 && (from_hint || r == -ENOENT)) {
		/* A remembered location may be stale (GC moved the chunk), as
		 * may the catalog's answer of a moment ago (GC repointed it
		 * and deleted the pack since), and a hint may have met a
		 * transient failure: ask the catalog and read once more, unless
		 * it still names the pack just found gone. */
		int q = catalog_loc(cc, id, &fresh);

		if (q < 0)
			r = q;
		else if (r != -ENOENT || fresh.pack != loc.pack) {
			loc = fresh;
			learn_pack(cc, loc.pack);
			r = read_at(cc, id, &loc, &buf, &cap);
			if (r == -ENOENT)
				forget_pack(cc, loc.pack, gone);
		}
	}
	if (r < 0) {
		buf_drop(cc, buf, cap);
		return r;
	}
	*ret_buf = buf;
	*ret_cap = cap;
	*ret_loc = loc;
	return 0;
}

/* Publishes the outcome of loading e (r, buf, len, cap) to the table and
 * to the waiters. The loader's own reference stays with the caller. */
static int finish(struct ferry_chunk_cache *cc, struct centry *e, int r, void *buf, size_t len,
		  size_t cap)
{
	e->loading = 0;
	pthread_cond_broadcast(&cc->loaded);
	if (r < 0) {
		/* Failures are not cached: the next reader tries again (the
		 * store may have been repaired, or the error was transient). */
		e->err = r;
		if (e->cached) {
			table_remove(cc, e);
			centry_unref(cc, e); /* the table's */
		}
		return r;
	}
	e->buf = buf;
	e->len = len;
	e->cap = cap;
	lru_table_push(&cc->table, &e->node);
	cc->bytes += cap;
	for (struct centry *old; cc->bytes > cc->max_bytes &&
				 (old = centry_of(lru_table_oldest(&cc->table))) && old != e;)
		evict(cc, old);
	if (cc->bytes > cc->max_bytes) {
		/* Larger than the whole cache: hand it out uncached. */
		table_remove(cc, e);
		cc->bytes -= cap;
		centry_unref(cc, e); /* the table's; the caller holds another */
	}
	return 0;
}

/* ---- coalesced loads, for object storage ---- */

struct job {
	struct centry *e;
	struct ferry_loc loc;
	int have_loc;
	void *buf;
	size_t cap;
	int r;
};

static int loc_follows(const struct ferry_loc *a, const struct ferry_loc *b)
{
	return a->pack == b->pack && b->offset == ferry_store_entry_end(a);
}

/* A buffer for j's plain bytes. */
static int job_buf(struct ferry_chunk_cache *cc, struct job *j)
{
	if (j->buf)
		return 0;
	if (!chunk_valid(cc, j->loc.plen))
		return -EBADMSG;
	j->buf = buf_get(cc, j->loc.plen, &j->cap);
	return j->buf ? 0 : -ENOMEM;
}

/* Reads jobs [0, n), which lie back to back in one pack and have their
 * buffers, with one GET; the store verifies each entry as any read of it
 * and offers its disk cache those that check out. A job that fails here is
 * left to load() (r < 0); where the pack is gone, so are the batch's other
 * locations in it (*gone), and load() asks the catalog at once. */
static void fetch_run(struct ferry_chunk_cache *cc, struct job *jobs, size_t n, uint64_t *gone)
{
	struct ferry_store_read reads[BATCH_MAX];
	int r;

	assert(n <= BATCH_MAX);
	for (size_t i = 0; i < n; i++)
		reads[i] = (struct ferry_store_read){
			.loc = jobs[i].loc,
			.id = &jobs[i].e->node.id,
			.buf = jobs[i].buf,
			.bufsize = jobs[i].loc.plen,
		};
	r = ferry_store_read_run(ferry_vault_store(cc->vault), reads, n);
	for (size_t i = 0; i < n; i++)
		jobs[i].r = reads[i].r;
	if (r == -ENOENT)
		forget_pack(cc, jobs[0].loc.pack, gone);
}

/* Loads jobs [0, n) (taken on, not queued), grouping those that lie back to
 * back in a pack into one GET each. Without cc->lock. */
static void load_batch(struct ferry_chunk_cache *cc, struct job *jobs, size_t n)
{
	uint64_t gone = 0;
	size_t i, k;

	ferry_vault_lock(cc->vault);
	for (i = 0; i < n; i++) {
		jobs[i].r = -EAGAIN;
		if (!jobs[i].have_loc)
			jobs[i].have_loc = ferry_catalog_object_get(ferry_vault_catalog(cc->vault),
								    &jobs[i].e->node.id,
								    &jobs[i].loc) >= 0;
	}
	ferry_vault_unlock(cc->vault);

	/* What the store's disk cache holds needs no GET at all. */
	for (i = 0; i < n; i++)
		if (jobs[i].have_loc && job_buf(cc, &jobs[i]) >= 0)
			jobs[i].r = ferry_store_read_cached(ferry_vault_store(cc->vault),
							    &jobs[i].loc, &jobs[i].e->node.id,
							    jobs[i].buf, jobs[i].loc.plen);

	/* Runs of neighbours, one GET each. Jobs without a buffer (damaged
	 * sizes, no memory) are load()'s to report; those in a pack a run
	 * found gone, load()'s to look up again. */
	for (i = 0; i < n; i = k) {
		k = i + 1;
		if (!jobs[i].have_loc || jobs[i].r >= 0 || !jobs[i].buf || jobs[i].loc.pack == gone)
			continue;
		while (k < n && jobs[k].have_loc && jobs[k].r < 0 && jobs[k].buf &&
		       loc_follows(&jobs[k - 1].loc, &jobs[k].loc) &&
		       ferry_store_entry_end(&jobs[k].loc) - jobs[i].loc.offset <= RANGE_MAX)
			k++;
		if (k - i > 1)
			fetch_run(cc, jobs + i, k - i, &gone);
	}
	/* Singles, and whatever a coalesced read did not deliver: the plain
	 * way, which also corrects a stale location through the catalog. */
	for (i = 0; i < n; i++) {
		struct job *j = &jobs[i];
		struct ferry_loc loc;

		if (j->r >= 0)
			continue;
		buf_drop(cc, j->buf, j->cap);
		j->buf = NULL;
		j->r = load(cc, &j->e->node.id, j->have_loc ? &j->loc : NULL, &gone, &j->buf,
			    &j->cap, &loc);
		if (j->r >= 0)
			j->loc = loc;
	}
}

/* Loads e, which the caller has taken on (loading, not queued), and
 * publishes the outcome. Called with cc->lock held, which it drops while
 * reading. The caller's reference stays. */
static int load_entry(struct ferry_chunk_cache *cc, struct centry *e)
{
	struct ferry_loc hint, loc = {};
	struct locslot *m = locslot_of(cc, &e->node.id);
	int have_hint = m->valid && ferry_id_equal(&m->id, &e->node.id);
	uint64_t gone = 0;
	void *buf = NULL;
	size_t cap = 0;
	int r;

	if (have_hint)
		hint = m->loc;
	pthread_mutex_unlock(&cc->lock);
	r = load(cc, &e->node.id, have_hint ? &hint : NULL, &gone, &buf, &cap, &loc);
	pthread_mutex_lock(&cc->lock);
	if (r >= 0)
		*m = (struct locslot){ .id = e->node.id, .loc = loc, .valid = 1 };
	return finish(cc, e, r, buf, loc.plen, cap);
}

/* Returns the chunk with a reference the caller drops with release(). */
static int acquire(struct ferry_chunk_cache *cc, const struct ferry_id *id, struct centry **ret)
{
	struct centry *e;
	int r;

	pthread_mutex_lock(&cc->lock);
	e = table_find(cc, id);
	if (e && !e->queued) {
		e->refs++;
		while (e->loading)
			pthread_cond_wait(&cc->loaded, &cc->lock);
		if (e->err) {
			r = e->err;
			centry_unref(cc, e);
			pthread_mutex_unlock(&cc->lock);
			return r;
		}
		if (e->cached)
			lru_table_touch(&cc->table, &e->node);
		pthread_mutex_unlock(&cc->lock);
		*ret = e;
		return 0;
	}
	if (e) {
		/* Queued for read-ahead, not started: sooner done here than
		 * waited for behind the rest of the queue. */
		e->queued = 0;
		e->refs++;
	} else {
		e = table_add(cc, id, 2); /* the table's and ours */
		if (!e) {
			pthread_mutex_unlock(&cc->lock);
			return -ENOMEM;
		}
	}
	r = load_entry(cc, e);
	if (r < 0)
		centry_unref(cc, e);
	pthread_mutex_unlock(&cc->lock);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

/* ---- read-ahead ---- */

/* Under cc->lock: the next queued entry, taken on, with the queue's
 * reference; NULL when the queue is empty. */
static struct centry *take(struct ferry_chunk_cache *cc)
{
	while (cc->qlen > 0) {
		struct centry *e = cc->queue[cc->qhead];

		cc->qhead = (cc->qhead + 1) % QUEUE_MAX;
		cc->qlen--;
		if (e->queued) {
			e->queued = 0;
			return e;
		}
		/* A reader took it over. */
		centry_unref(cc, e);
	}
	return NULL;
}

static void *prefetch_main(void *userdata)
{
	struct ferry_chunk_cache *cc = userdata;
	/* Coalesced reads pay only where a request costs more than its
	 * bytes; elsewhere chunks load one by one. */
	int coalesce = cc->remote;
	struct job jobs[BATCH_MAX];

	pthread_mutex_lock(&cc->lock);
	for (;;) {
		struct centry *e;
		size_t n = 0;

		while (!cc->stopping && cc->qlen == 0)
			pthread_cond_wait(&cc->work, &cc->lock);
		if (cc->stopping)
			break;
		if (!coalesce) {
			e = take(cc);
			if (e) {
				(void)load_entry(cc, e);
				centry_unref(cc, e); /* the queue's */
			}
			continue;
		}

		while (n < BATCH_MAX && (e = take(cc))) {
			struct locslot *m = locslot_of(cc, &e->node.id);

			jobs[n] = (struct job){ .e = e };
			if (m->valid && ferry_id_equal(&m->id, &e->node.id)) {
				jobs[n].loc = m->loc;
				jobs[n].have_loc = 1;
			}
			n++;
		}
		pthread_mutex_unlock(&cc->lock);
		load_batch(cc, jobs, n);
		pthread_mutex_lock(&cc->lock);
		for (size_t i = 0; i < n; i++) {
			struct job *j = &jobs[i];

			if (j->r >= 0)
				*locslot_of(cc, &j->e->node.id) = (struct locslot){
					.id = j->e->node.id, .loc = j->loc, .valid = 1
				};
			(void)finish(cc, j->e, j->r, j->buf, j->r >= 0 ? j->loc.plen : 0, j->cap);
			centry_unref(cc, j->e); /* the queue's */
		}
	}
	pthread_mutex_unlock(&cc->lock);
	return NULL;
}

/* Under cc->lock. Threads start on first use, not with the cache: a program
 * may fork between the two (ferryfs detaching), and threads do not survive
 * that. They block every signal, so signals reach the program's threads. */
static void start_threads(struct ferry_chunk_cache *cc)
{
	sigset_t all, old;

	if (cc->nthreads >= cc->pf_threads || cc->stopping)
		return;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (cc->nthreads < cc->pf_threads) {
		if (pthread_create(&cc->threads[cc->nthreads], NULL, prefetch_main, cc) != 0) {
			/* Read-ahead is an optimisation: carry on with what runs. */
			cc->pf_threads = cc->nthreads;
			break;
		}
		cc->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Queues the chunks ids[0..n) that nobody has or is loading. */
static void enqueue(struct ferry_chunk_cache *cc, const struct ferry_id *ids, size_t n)
{
	size_t queued = 0;

	pthread_mutex_lock(&cc->lock);
	start_threads(cc);
	for (size_t i = 0; i < n && cc->nthreads > 0 && cc->qlen < QUEUE_MAX; i++) {
		struct centry *e;

		if (table_find(cc, &ids[i]))
			continue;
		e = table_add(cc, &ids[i], 2); /* the table's and the queue's */
		if (!e)
			break;
		e->queued = 1;
		cc->queue[(cc->qhead + cc->qlen) % QUEUE_MAX] = e;
		cc->qlen++;
		queued++;
	}
	if (queued == 1)
		pthread_cond_signal(&cc->work);
	else if (queued > 1)
		pthread_cond_broadcast(&cc->work);
	pthread_mutex_unlock(&cc->lock);
}

static int lookup(struct ferry_image *img, uint64_t block, struct ferry_extent *e);

/* Called before a read of [off, end): if it continues the last read, queues
 * the chunks of the window after it that are not queued yet. */
static void readahead(struct ferry_image *img, uint64_t off, uint64_t end)
{
	struct ferry_chunk_cache *cc = img->cc;
	struct ferry_id ids[64];
	uint64_t window, from, to, pos;
	unsigned chunks;
	size_t n = 0;
	int seq;

	pthread_mutex_lock(&cc->lock);
	chunks = cc->pf_threads ? cc->pf_chunks : 0;
	pthread_mutex_unlock(&cc->lock);
	/* Prefetched chunks must not push out what readers still use: at
	 * most a quarter of the cache is read-ahead. */
	if (cc->chunk_size)
		chunks = (unsigned)MIN((size_t)chunks, cc->max_bytes / 4 / cc->chunk_size);
	if (chunks == 0)
		return;
	window = (uint64_t)chunks * (cc->chunk_size ? cc->chunk_size : FERRY_CHUNK_SIZE_DEFAULT);

	pthread_mutex_lock(&img->lock);
	seq = off <= img->next_off + SEQ_SLACK && off + SEQ_SLACK >= img->next_off;
	img->next_off = end;
	if (!seq) {
		/* A jump (back to the start, say): any new stream starts here. */
		img->pf_off = end;
		pthread_mutex_unlock(&img->lock);
		return;
	}
	from = MAX(img->pf_off, end);
	to = MIN(end + window, img->size);
	/* Topped up only once half the window is used, so that a prefetch
	 * thread finds runs of chunks to fetch together, not one or two. */
	if (from - end >= window / 2)
		to = from;
	/* Claimed now, looked up below without the lock: concurrent readers
	 * of this image queue disjoint windows. */
	if (from < to)
		img->pf_off = to;
	pthread_mutex_unlock(&img->lock);

	for (pos = from; pos < to;) {
		uint64_t block = pos >> FERRY_BLOCK_SHIFT;
		struct ferry_extent e;

		/* A damaged map is the foreground read's to report. */
		if (lookup(img, block, &e) < 0)
			break;
		if (e.count > UINT64_MAX / FERRY_BLOCK_SIZE - e.block)
			break;
		pos = (e.block + e.count) << FERRY_BLOCK_SHIFT;
		if (e.zero || (n > 0 && ferry_id_equal(&ids[n - 1], &e.chunk)))
			continue;
		ids[n++] = e.chunk;
		if (n == ARRAY_SIZE(ids)) {
			enqueue(cc, ids, n);
			n = 0;
		}
	}
	if (n > 0)
		enqueue(cc, ids, n);
}

/* ---- images ---- */

int ferry_image_open(struct ferry_chunk_cache *cc, const struct ferry_id *root, uint64_t size,
		     struct ferry_image **ret)
{
	struct ferry_image *img;
	int r;

	assert(cc);
	assert(ret);

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->cc = cc;
	img->size = size;
	img->nblocks = DIV_ROUND_UP(size, (uint64_t)FERRY_BLOCK_SIZE);
	if (img->nblocks > 0) {
		r = ferry_map_open(ferry_vault_objsrc(cc->vault), root, img->nblocks, &img->map);
		if (r < 0) {
			free(img);
			return r;
		}
	}
	pthread_mutex_init(&img->lock, NULL);
	*ret = img;
	return 0;
}

struct ferry_image *ferry_image_free(struct ferry_image *img)
{
	if (!img)
		return NULL;
	ferry_map_free(img->map);
	pthread_mutex_destroy(&img->lock);
	free(img);
	return NULL;
}

uint64_t ferry_image_size(const struct ferry_image *img)
{
	assert(img);
	return img->size;
}

/* The run holding block, checked: a map that answers with a run not
 * covering block is damaged, and must not send the reader into a loop. */
static int lookup(struct ferry_image *img, uint64_t block, struct ferry_extent *e)
{
	int r;

	r = ferry_map_lookup(img->map, block, e);
	if (r < 0)
		return r;
	if (e->count == 0 || e->block > block || block - e->block >= e->count)
		return -EBADMSG;
	return 0;
}

/* Where the bytes of a read go: copied to out, or lent as pieces in v. */
struct sink {
	struct ferry_chunk_cache *cc;
	uint8_t *out;
	struct ferry_image_iov *v;
	size_t max_pieces;
};

struct ferry_image_iov {
	struct ferry_chunk_cache *cc; /* of the chunks held */
	struct iovec *iov;
	size_t niov, iov_cap;
	struct centry **held;
	size_t nheld, held_cap;
};

int ferry_image_iov_new(struct ferry_image_iov **ret)
{
	assert(ret);

	*ret = calloc(1, sizeof(**ret));
	return *ret ? 0 : -ENOMEM;
}

void ferry_image_iov_release(struct ferry_image_iov *v)
{
	assert(v);

	if (v->nheld > 0) {
		pthread_mutex_lock(&v->cc->lock);
		for (size_t i = 0; i < v->nheld; i++)
			centry_unref(v->cc, v->held[i]);
		pthread_mutex_unlock(&v->cc->lock);
	}
	v->nheld = 0;
	v->niov = 0;
}

struct ferry_image_iov *ferry_image_iov_free(struct ferry_image_iov *v)
{
	if (!v)
		return NULL;
	ferry_image_iov_release(v);
	free(v->iov);
	free(v->held);
	free(v);
	return NULL;
}

/* Hands the n bytes at src (the hole buffer when c is NULL, else inside c,
 * whose reference it takes over) to the sink, at byte at of the read. */
static int sink_put(struct sink *s, uint64_t at, const uint8_t *src, size_t n, struct centry *c)
{
	struct ferry_image_iov *v = s->v;
	struct iovec *last;

	if (!v) {
		if (c) {
			memcpy(s->out + at, src, n);
			release(s->cc, c);
		} else
			memset(s->out + at, 0, n);
		return 0;
	}
	if (c) {
		if (reserve(&v->held, &v->held_cap, v->nheld + 1, sizeof(*v->held)) < 0) {
			release(v->cc, c);
			return -ENOMEM;
		}
		v->held[v->nheld++] = c;
	}
	/* Neighbouring bytes (of one chunk, say) make one piece. */
	last = v->niov > 0 ? &v->iov[v->niov - 1] : NULL;
	if (last && (const uint8_t *)last->iov_base + last->iov_len == src) {
		last->iov_len += n;
		return 0;
	}
	if (v->niov >= s->max_pieces)
		return -E2BIG;
	if (reserve(&v->iov, &v->iov_cap, v->niov + 1, sizeof(*v->iov)) < 0)
		return -ENOMEM;
	v->iov[v->niov++] = (struct iovec){ .iov_base = (void *)src, .iov_len = n };
	return 0;
}

/* Reads [off, end) into the sink. */
static int walk(struct ferry_image *img, uint64_t off, uint64_t end, struct sink *s)
{
	for (uint64_t pos = off; pos < end;) {
		uint64_t block = pos >> FERRY_BLOCK_SHIFT, run_end, coff, n;
		struct ferry_extent e;
		struct centry *c = NULL;
		int r;

		r = lookup(img, block, &e);
		if (r < 0)
			return r;
		if (e.count > UINT64_MAX / FERRY_BLOCK_SIZE - e.block)
			run_end = end;
		else
			run_end = MIN((e.block + e.count) << FERRY_BLOCK_SHIFT, end);

		if (e.zero) {
			/* In pieces the size of the hole buffer. */
			for (; pos < run_end; pos += n) {
				n = MIN(run_end - pos, (uint64_t)ZEROS_SIZE);
				r = sink_put(s, pos - off, img->cc->zeros, (size_t)n, NULL);
				if (r < 0)
					return r;
			}
			continue;
		}

		n = run_end - pos;
		coff = (((uint64_t)e.chunk_block + (block - e.block)) << FERRY_BLOCK_SHIFT) +
		       (pos & (FERRY_BLOCK_SIZE - 1));
		r = acquire(img->cc, &e.chunk, &c);
		if (r < 0)
			return r;
		if (coff >= c->len || n > c->len - coff) {
			release(img->cc, c);
			return -EBADMSG;
		}
		r = sink_put(s, pos - off, (const uint8_t *)c->buf + coff, (size_t)n, c);
		if (r < 0)
			return r;
		pos = run_end;
	}
	return 0;
}

/* The end of a read of len bytes at off, after queueing read-ahead; off
 * where there is nothing to read. */
static uint64_t read_begin(struct ferry_image *img, size_t len, uint64_t off)
{
	uint64_t end;

	if (off >= img->size || len == 0)
		return off;
	end = off + MIN((uint64_t)len, img->size - off);
	if (img->map)
		readahead(img, off, end);
	return end;
}

ssize_t ferry_image_read(struct ferry_image *img, void *buf, size_t len, uint64_t off)
{
	struct sink s = { .cc = img->cc, .out = buf };
	uint64_t end;
	int r;

	assert(img);
	assert(buf || len == 0);

	end = read_begin(img, len, off);
	r = walk(img, off, end, &s);
	if (r < 0)
		return r;
	return (ssize_t)(end - off);
}

ssize_t ferry_image_read_iov(struct ferry_image *img, size_t len, uint64_t off,
			     struct ferry_image_iov *v, size_t max_pieces,
			     const struct iovec **ret_iov, size_t *ret_n)
{
	struct sink s = { .cc = img->cc, .v = v, .max_pieces = max_pieces };
	uint64_t end;
	int r;

	assert(img);
	assert(v);
	assert(ret_iov);
	assert(ret_n);

	ferry_image_iov_release(v);
	v->cc = img->cc;
	end = read_begin(img, len, off);
	r = walk(img, off, end, &s);
	if (r < 0) {
		ferry_image_iov_release(v);
		return r;
	}
	*ret_iov = v->iov;
	*ret_n = v->niov;
	return (ssize_t)(end - off);
}

int ferry_image_seek(struct ferry_image *img, uint64_t off, int whence, uint64_t *ret)
{
	uint64_t pos = off;

	assert(img);
	assert(ret);

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off >= img->size)
		return -ENXIO;

	while (pos < img->size) {
		struct ferry_extent e;
		int r;

		r = lookup(img, pos >> FERRY_BLOCK_SHIFT, &e);
		if (r < 0)
			return r;
		if (!!e.zero == (whence == SEEK_HOLE)) {
			*ret = pos;
			return 0;
		}
		if (e.count >= img->nblocks - e.block)
			break;
		pos = (e.block + e.count) << FERRY_BLOCK_SHIFT;
	}
	/* No more data; the end of the file is where the implicit hole is. */
	if (whence == SEEK_DATA)
		return -ENXIO;
	*ret = img->size;
	return 0;
}
