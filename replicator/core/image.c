/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk images read out of a vault. An image is a map (root, size); reading
 * it walks the map's runs and copies bytes out of decompressed, verified
 * chunks. The chunks live in a cache shared by every image of a reader:
 * a hash table keyed by chunk id with an LRU list, bounded in bytes. The
 * cache's mutex covers only the table and the list; reading, decompressing
 * and verifying a chunk happen outside it, so many threads make progress at
 * once, and a chunk that one thread is already loading is waited for, not
 * loaded twice.
 */
#include "ferry/image.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/map.h"
#include "ferry/util.h"

struct centry {
	struct ferry_id id;
	struct centry *hnext;               /* hash bucket chain */
	struct centry *lru_prev, *lru_next; /* only while ready and cached */
	void *buf;
	size_t len;
	unsigned refs; /* the table's reference counts as one while cached */
	int loading;   /* a thread is reading it; others wait on cc->loaded */
	int err;       /* load failure, seen by the waiters */
	int cached;    /* in the table (and, once loaded, in the LRU list) */
};

struct ferry_chunk_cache {
	struct ferry_vault *vault;
	uint32_t chunk_size;
	size_t max_bytes;
	pthread_mutex_t lock;
	pthread_cond_t loaded;
	struct centry **buckets;
	size_t nbuckets;                    /* a power of two */
	struct centry *lru_head, *lru_tail; /* head: most recently used */
	size_t bytes;
};

struct ferry_image {
	struct ferry_chunk_cache *cc;
	struct ferry_map *map; /* NULL for an empty disk */
	uint64_t size;
	uint64_t nblocks;
};

/* Ids are SHA-256 (or HMAC) output: any 8 bytes are already uniform. */
static size_t bucket_of(const struct ferry_chunk_cache *cc, const struct ferry_id *id)
{
	uint64_t h;

	memcpy(&h, id->b, sizeof(h));
	return (size_t)h & (cc->nbuckets - 1);
}

int ferry_chunk_cache_new(struct ferry_vault *v, size_t max_bytes, struct ferry_chunk_cache **ret)
{
	struct ferry_chunk_cache *cc;
	size_t want, n = 256;

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
	cc->nbuckets = n;
	cc->buckets = calloc(n, sizeof(*cc->buckets));
	if (!cc->buckets) {
		free(cc);
		return -ENOMEM;
	}
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->loaded, NULL);
	*ret = cc;
	return 0;
}

static void centry_free(struct centry *e)
{
	free(e->buf);
	free(e);
}

struct ferry_chunk_cache *ferry_chunk_cache_free(struct ferry_chunk_cache *cc)
{
	if (!cc)
		return NULL;
	/* Every image of this cache must be gone: nothing is loading or held. */
	for (size_t i = 0; i < cc->nbuckets; i++) {
		struct centry *e = cc->buckets[i];

		while (e) {
			struct centry *next = e->hnext;

			centry_free(e);
			e = next;
		}
	}
	free(cc->buckets);
	pthread_cond_destroy(&cc->loaded);
	pthread_mutex_destroy(&cc->lock);
	free(cc);
	return NULL;
}

/* All of the following run with cc->lock held. */

static void lru_unlink(struct ferry_chunk_cache *cc, struct centry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		cc->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		cc->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(struct ferry_chunk_cache *cc, struct centry *e)
{
	e->lru_prev = NULL;
	e->lru_next = cc->lru_head;
	if (cc->lru_head)
		cc->lru_head->lru_prev = e;
	else
		cc->lru_tail = e;
	cc->lru_head = e;
}

static void table_remove(struct ferry_chunk_cache *cc, struct centry *e)
{
	struct centry **p = &cc->buckets[bucket_of(cc, &e->id)];

	while (*p && *p != e)
		p = &(*p)->hnext;
	if (*p)
		*p = e->hnext;
	e->hnext = NULL;
	e->cached = 0;
}

static void centry_unref(struct centry *e)
{
	assert(e->refs > 0);
	if (--e->refs == 0)
		centry_free(e);
}

/* Drops e from the cache; readers still holding it keep their copy. */
static void evict(struct ferry_chunk_cache *cc, struct centry *e)
{
	lru_unlink(cc, e);
	table_remove(cc, e);
	cc->bytes -= e->len;
	centry_unref(e);
}

static void release(struct ferry_chunk_cache *cc, struct centry *e)
{
	pthread_mutex_lock(&cc->lock);
	centry_unref(e);
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

/* Returns the chunk with a reference the caller drops with release(). */
static int acquire(struct ferry_chunk_cache *cc, const struct ferry_id *id, struct centry **ret)
{
	struct centry *e;
	void *buf = NULL;
	size_t len = 0;
	int r;

	pthread_mutex_lock(&cc->lock);
	for (e = cc->buckets[bucket_of(cc, id)]; e; e = e->hnext)
		if (ferry_id_equal(&e->id, id))
			break;
	if (e) {
		e->refs++;
		while (e->loading)
			pthread_cond_wait(&cc->loaded, &cc->lock);
		if (e->err) {
			r = e->err;
			centry_unref(e);
			pthread_mutex_unlock(&cc->lock);
			return r;
		}
		if (e->cached && cc->lru_head != e) {
			lru_unlink(cc, e);
			lru_push_head(cc, e);
		}
		pthread_mutex_unlock(&cc->lock);
		*ret = e;
		return 0;
	}

	e = calloc(1, sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&cc->lock);
		return -ENOMEM;
	}
	e->id = *id;
	e->loading = 1;
	e->cached = 1;
	e->refs = 2; /* the table's and ours */
	e->hnext = cc->buckets[bucket_of(cc, id)];
	cc->buckets[bucket_of(cc, id)] = e;
	pthread_mutex_unlock(&cc->lock);

	r = ferry_vault_read_object(cc->vault, id, &buf, &len);
	if (r >= 0 && !chunk_valid(cc, len)) {
		free(buf);
		buf = NULL;
		r = -EBADMSG;
	}

	pthread_mutex_lock(&cc->lock);
	e->loading = 0;
	if (r < 0) {
		/* Failures are not cached: the next reader tries again (the
		 * store may have been repaired, or the error was transient). */
		e->err = r;
		table_remove(cc, e);
		e->refs--; /* the table's */
		centry_unref(e);
		pthread_cond_broadcast(&cc->loaded);
		pthread_mutex_unlock(&cc->lock);
		return r;
	}
	e->buf = buf;
	e->len = len;
	lru_push_head(cc, e);
	cc->bytes += len;
	while (cc->bytes > cc->max_bytes && cc->lru_tail && cc->lru_tail != e)
		evict(cc, cc->lru_tail);
	if (cc->bytes > cc->max_bytes) {
		/* Larger than the whole cache: hand it out uncached. */
		lru_unlink(cc, e);
		table_remove(cc, e);
		cc->bytes -= len;
		e->refs--;
	}
	pthread_cond_broadcast(&cc->loaded);
	pthread_mutex_unlock(&cc->lock);
	*ret = e;
	return 0;
}

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
	*ret = img;
	return 0;
}

struct ferry_image *ferry_image_free(struct ferry_image *img)
{
	if (!img)
		return NULL;
	ferry_map_free(img->map);
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

ssize_t ferry_image_read(struct ferry_image *img, void *buf, size_t len, uint64_t off)
{
	uint8_t *out = buf;
	uint64_t pos, end;

	assert(img);
	assert(buf || len == 0);

	if (off >= img->size || len == 0)
		return 0;
	end = off + MIN((uint64_t)len, img->size - off);

	for (pos = off; pos < end;) {
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
		n = run_end - pos;

		if (e.zero) {
			memset(out + (pos - off), 0, n);
			pos = run_end;
			continue;
		}

		coff = (((uint64_t)e.chunk_block + (block - e.block)) << FERRY_BLOCK_SHIFT) +
		       (pos & (FERRY_BLOCK_SIZE - 1));
		r = acquire(img->cc, &e.chunk, &c);
		if (r < 0)
			return r;
		if (coff >= c->len || n > c->len - coff) {
			release(img->cc, c);
			return -EBADMSG;
		}
		memcpy(out + (pos - off), (const uint8_t *)c->buf + coff, n);
		release(img->cc, c);
		pos = run_end;
	}
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
