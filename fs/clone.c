/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writable clones (see clone.h). The overlay is a hash table from block
 * number to a 4 KiB buffer. A flush takes a snapshot of the table under the
 * clone's lock and pins the buffers it took; a write that arrives meanwhile
 * to a pinned block gets a fresh buffer instead of changing the one being
 * flushed. Once the new root is committed, exactly the entries that still
 * hold a pinned buffer are dropped: blocks rewritten during the flush stay
 * dirty for the next one. A pinned buffer always belongs to the flush that
 * pinned it, whoever replaces or removes its entry.
 */
#include "clone.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/ingest.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/util.h"

/* Runs handed to the ingest are cut at 1 MiB disk boundaries: a multiple of
 * every allowed chunk size, so aligned whole chunks still deduplicate. */
#define RUN_BLOCKS 256u

struct entry {
	struct entry *next;
	uint64_t block;
	uint8_t *data; /* FERRY_BLOCK_SIZE bytes */
	int pinned;    /* data belongs to a flush in progress */
};

struct item {
	uint64_t block;
	uint8_t *data;
};

struct clone {
	struct ferry_chunk_cache *cc;
	struct ferry_vault *wv;
	int64_t failover_id;
	uint16_t idx;
	char *label;
	uint64_t size, nblocks;

	/* Guards everything below; readers share it. */
	pthread_rwlock_t lock;
	struct ferry_id root; /* committed */
	struct ferry_image *img;
	struct entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t n;        /* entries */
	int err;         /* set by clone_discard */
	int64_t mtime_ns;

	/* One flush at a time per clone. */
	pthread_mutex_t flush_lock;
};

static size_t bucket_of(const struct clone *c, uint64_t block)
{
	return (size_t)((block * UINT64_C(0x9e3779b97f4a7c15)) >> 20) & (c->nbuckets - 1);
}

static struct entry *find(const struct clone *c, uint64_t block)
{
	for (struct entry *e = c->buckets[bucket_of(c, block)]; e; e = e->next)
		if (e->block == block)
			return e;
	return NULL;
}

static int grow(struct clone *c)
{
	size_t n = c->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));
	struct entry **old = c->buckets;
	size_t oldn = c->nbuckets;

	if (!b)
		return -ENOMEM;
	c->buckets = b;
	c->nbuckets = n;
	for (size_t i = 0; i < oldn; i++)
		while (old[i]) {
			struct entry *e = old[i];
			size_t k = bucket_of(c, e->block);

			old[i] = e->next;
			e->next = b[k];
			b[k] = e;
		}
	free(old);
	return 0;
}

static struct entry *insert(struct clone *c, uint64_t block, uint8_t *data)
{
	struct entry *e;
	size_t k;

	/* A table that cannot grow only gets longer chains. */
	if (c->n >= c->nbuckets)
		(void)grow(c);
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->block = block;
	e->data = data;
	k = bucket_of(c, block);
	e->next = c->buckets[k];
	c->buckets[k] = e;
	c->n++;
	return e;
}

static void remove_entry(struct clone *c, struct entry *e)
{
	struct entry **p = &c->buckets[bucket_of(c, e->block)];

	while (*p && *p != e)
		p = &(*p)->next;
	assert(*p);
	*p = e->next;
	if (!e->pinned)
		free(e->data);
	free(e);
	c->n--;
}

static void drop_all(struct clone *c)
{
	for (size_t i = 0; i < c->nbuckets; i++)
		while (c->buckets[i])
			remove_entry(c, c->buckets[i]);
}

int clone_new(struct ferry_chunk_cache *cc, struct ferry_vault *wv,
	      const struct ferry_clone_disk *d, const char *label, struct clone **ret)
{
	struct clone *c;
	int r;

	assert(cc && d && label && ret);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cc = cc;
	c->wv = wv;
	c->failover_id = d->failover_id;
	c->idx = d->idx;
	c->size = d->size;
	c->nblocks = DIV_ROUND_UP(d->size, (uint64_t)FERRY_BLOCK_SIZE);
	c->root = d->root;
	c->nbuckets = 1024;
	c->label = strdup(label);
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	pthread_rwlock_init(&c->lock, NULL);
	pthread_mutex_init(&c->flush_lock, NULL);
	if (!c->label || !c->buckets) {
		clone_free(c);
		return -ENOMEM;
	}
	r = ferry_image_open(cc, &d->root, d->size, &c->img);
	if (r < 0) {
		clone_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

struct clone *clone_free(struct clone *c)
{
	if (!c)
		return NULL;
	if (c->buckets)
		drop_all(c);
	free(c->buckets);
	ferry_image_free(c->img);
	pthread_rwlock_destroy(&c->lock);
	pthread_mutex_destroy(&c->flush_lock);
	free(c->label);
	free(c);
	return NULL;
}

int64_t clone_failover_id(const struct clone *c)
{
	return c->failover_id;
}

uint16_t clone_idx(const struct clone *c)
{
	return c->idx;
}

uint64_t clone_dirty_bytes(struct clone *c)
{
	uint64_t n;

	pthread_rwlock_rdlock(&c->lock);
	n = (uint64_t)c->n * FERRY_BLOCK_SIZE;
	pthread_rwlock_unlock(&c->lock);
	return n;
}

int64_t clone_mtime(struct clone *c)
{
	int64_t t;

	pthread_rwlock_rdlock(&c->lock);
	t = c->mtime_ns;
	pthread_rwlock_unlock(&c->lock);
	return t;
}

/* Reads whole block `block` of the committed map (zeros past the end). */
static int read_committed_block(struct clone *c, uint64_t block, uint8_t *out)
{
	ssize_t n = ferry_image_read(c->img, out, FERRY_BLOCK_SIZE, block << FERRY_BLOCK_SHIFT);

	if (n < 0)
		return (int)n;
	memset(out + n, 0, FERRY_BLOCK_SIZE - (size_t)n);
	return 0;
}

ssize_t clone_read(struct clone *c, void *buf, size_t len, uint64_t off)
{
	uint8_t *out = buf;
	uint64_t end, pos;
	ssize_t r = 0;

	if (off >= c->size || len == 0)
		return 0;
	end = off + MIN((uint64_t)len, c->size - off);

	pthread_rwlock_rdlock(&c->lock);
	if (c->err) {
		r = c->err;
	} else if (c->n == 0) {
		/* Nothing written since the last flush: as fast as an image. */
		r = ferry_image_read(c->img, out, (size_t)(end - off), off);
	} else {
		for (pos = off; pos < end;) {
			uint64_t block = pos >> FERRY_BLOCK_SHIFT;
			uint64_t bend = MIN((block + 1) << FERRY_BLOCK_SHIFT, end);
			struct entry *e = find(c, block);
			ssize_t n;

			if (e) {
				memcpy(out + (pos - off), e->data + (pos & (FERRY_BLOCK_SIZE - 1)),
				       bend - pos);
				pos = bend;
				continue;
			}
			/* The longest stretch of unwritten blocks, in one read. */
			while (bend < end && !find(c, bend >> FERRY_BLOCK_SHIFT))
				bend = MIN(bend + FERRY_BLOCK_SIZE, end);
			n = ferry_image_read(c->img, out + (pos - off), (size_t)(bend - pos), pos);
			if (n < 0) {
				r = n;
				break;
			}
			if ((uint64_t)n != bend - pos) {
				r = -EIO;
				break;
			}
			pos = bend;
		}
		if (r >= 0)
			r = (ssize_t)(end - off);
	}
	pthread_rwlock_unlock(&c->lock);
	return r;
}

static ssize_t write_locked(struct clone *c, const uint8_t *src, uint64_t off, uint64_t end)
{
	for (uint64_t pos = off; pos < end;) {
		uint64_t block = pos >> FERRY_BLOCK_SHIFT;
		size_t boff = pos & (FERRY_BLOCK_SIZE - 1);
		size_t n = (size_t)MIN((uint64_t)(FERRY_BLOCK_SIZE - boff), end - pos);
		struct entry *e = find(c, block);
		int whole = n == FERRY_BLOCK_SIZE;

		if (!e || e->pinned) {
			uint8_t *data = malloc(FERRY_BLOCK_SIZE);
			int r = 0;

			if (!data)
				return -ENOMEM;
			/* A partial block starts from what readers see now. */
			if (!whole && e)
				memcpy(data, e->data, FERRY_BLOCK_SIZE);
			else if (!whole)
				r = read_committed_block(c, block, data);
			if (r < 0) {
				free(data);
				return r;
			}
			if (e) {
				/* the pinned buffer stays with its flush */
				e->data = data;
				e->pinned = 0;
			} else if (!(e = insert(c, block, data))) {
				free(data);
				return -ENOMEM;
			}
		}
		memcpy(e->data + boff, src + (pos - off), n);
		pos += n;
	}
	return (ssize_t)(end - off);
}

ssize_t clone_write(struct clone *c, const void *buf, size_t len, uint64_t off)
{
	uint64_t end, dirty;
	ssize_t r;

	if (!c->wv)
		return -EROFS;
	if (len == 0)
		return 0;
	if (off >= c->size)
		return -EFBIG;
	end = off + MIN((uint64_t)len, c->size - off);

	pthread_rwlock_wrlock(&c->lock);
	r = c->err ? c->err : write_locked(c, buf, off, end);
	dirty = (uint64_t)c->n * FERRY_BLOCK_SIZE;
	pthread_rwlock_unlock(&c->lock);
	if (r < 0 || dirty < CLONE_FLUSH_THRESHOLD)
		return r;

	/* The bytes are in the overlay either way; a failed flush is retried
	 * later, and only refuses writes once the overlay is far too big. */
	int k = clone_flush(c);
	if (k < 0) {
		log_error_errno(k, "clone %s: flushing %" PRIu64 " MiB of writes failed", c->label,
				dirty >> 20);
		if (dirty >= 4 * (uint64_t)CLONE_FLUSH_THRESHOLD)
			return k;
	}
	return r;
}

int clone_seek(struct clone *c, uint64_t off, int whence, uint64_t *ret)
{
	uint64_t pos = off, found;
	int r = 0;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off >= c->size)
		return -ENXIO;

	pthread_rwlock_rdlock(&c->lock);
	if (c->err) {
		r = c->err;
	} else if (whence == SEEK_DATA) {
		uint64_t first = off >> FERRY_BLOCK_SHIFT;

		r = ferry_image_seek(c->img, off, SEEK_DATA, &found);
		if (r == -ENXIO) {
			found = c->size;
			r = 0;
		}
		/* Every overlay block is data. */
		for (size_t i = 0; r >= 0 && i < c->nbuckets; i++)
			for (struct entry *e = c->buckets[i]; e; e = e->next)
				if (e->block >= first)
					found = MIN(found, MAX(e->block << FERRY_BLOCK_SHIFT, off));
		if (r >= 0 && found >= c->size)
			r = -ENXIO;
	} else {
		for (;;) {
			uint64_t block;

			r = ferry_image_seek(c->img, pos, SEEK_HOLE, &found);
			if (r < 0 || found >= c->size)
				break;
			block = found >> FERRY_BLOCK_SHIFT;
			if (!find(c, block))
				break;
			while (block < c->nblocks && find(c, block))
				block++;
			pos = block << FERRY_BLOCK_SHIFT;
			if (pos >= c->size) {
				found = c->size;
				break;
			}
		}
		if (r >= 0)
			found = MIN(found, c->size);
	}
	pthread_rwlock_unlock(&c->lock);
	if (r >= 0)
		*ret = found;
	return r;
}

static int item_cmp(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	return x->block < y->block ? -1 : x->block > y->block;
}

struct root_check {
	uint16_t idx;
	int found;
	struct ferry_id root;
};

static int root_check_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct root_check *rc = userdata;

	if (d->idx == rc->idx) {
		rc->found = 1;
		rc->root = d->root;
	}
	return 0;
}

/*
 * A replicator applying a large segment holds the catalog's write lock for
 * a while, and SQLite's busy wait gives up after some seconds. An fsync
 * must not fail for that: a busy catalog is asked again a few times.
 */
#define BUSY_ATTEMPTS 6

struct new_root {
	struct clone *c;
	const struct ferry_id *base, *root;
};

/* The clone's rows in the ingest's commit: the new root, after checking
 * that nobody else moved or removed the clone since base. */
static int root_rows(struct ferry_catalog *cat, void *userdata)
{
	struct new_root *nr = userdata;
	struct root_check rc = { .idx = nr->c->idx };
	int r = ferry_catalog_clone_disks(cat, nr->c->failover_id, root_check_cb, &rc);
	if (r >= 0 && !rc.found)
		r = -ENOENT;
	if (r >= 0 && !ferry_id_equal(&rc.root, nr->base))
		r = -ESTALE;
	return r < 0 ? r :
		       ferry_catalog_clone_disk_set_root(cat, nr->c->failover_id, nr->c->idx,
							 nr->root);
}

/* Writes items (sorted, distinct blocks) on top of base; returns the new
 * root once it is committed. */
static int write_pack(struct clone *c, const struct item *items, size_t n,
		      const struct ferry_id *base, struct ferry_id *ret_root)
{
	struct ferry_ingest *in = NULL;
	struct ferry_map *m = NULL;
	_cleanup_free_ uint8_t *run = NULL;
	struct ferry_id root;
	int r;

	run = malloc((size_t)RUN_BLOCKS * FERRY_BLOCK_SIZE);
	if (!run)
		return -ENOMEM;
	r = ferry_ingest_new(c->wv, &in);
	if (r >= 0)
		ferry_ingest_no_vault_dedup(in);
	if (r >= 0)
		r = ferry_map_open(ferry_ingest_objsrc(in), base, c->nblocks, &m);
	for (size_t i = 0; r >= 0 && i < n;) {
		size_t j = i + 1;

		while (j < n && items[j].block == items[j - 1].block + 1 &&
		       items[j].block % RUN_BLOCKS != 0)
			j++;
		if (j - i == 1) {
			r = ferry_ingest_write(in, m, items[i].block, items[i].data, 1);
		} else {
			for (size_t k = i; k < j; k++)
				memcpy(run + (k - i) * FERRY_BLOCK_SIZE, items[k].data,
				       FERRY_BLOCK_SIZE);
			r = ferry_ingest_write(in, m, items[i].block, run, j - i);
		}
		i = j;
	}
	if (r >= 0)
		r = ferry_ingest_flush(in);
	if (r >= 0)
		r = ferry_map_commit(m, &root);
	/* One pack, one transaction (ingest.h); GC never takes the pack, and
	 * this commit reuses nothing GC could take from under it. */
	if (r >= 0) {
		struct new_root nr = { c, base, &root };
		int attempts = 0;
		do
			r = ferry_ingest_commit(in, root_rows, &nr);
		while (r == -EBUSY && ++attempts < BUSY_ATTEMPTS);
	}
	ferry_map_free(m);
	ferry_ingest_free(in);
	if (r >= 0)
		*ret_root = root;
	return r;
}

/* After a flush: ok drops what was flushed and unchanged since; otherwise
 * the entries become ordinary dirty blocks again. Buffers replaced during
 * the flush are freed here. */
static void settle(struct clone *c, struct item *items, size_t n, int ok)
{
	for (size_t i = 0; i < n; i++) {
		struct entry *e = find(c, items[i].block);

		if (e && e->data == items[i].data && e->pinned) {
			e->pinned = 0;
			if (ok)
				remove_entry(c, e);
		} else
			free(items[i].data);
	}
}

static int flush_locked(struct clone *c)
{
	_cleanup_free_ struct item *items = NULL;
	struct ferry_image *img = NULL;
	struct ferry_id base, root;
	size_t n = 0;
	int r;

	pthread_rwlock_wrlock(&c->lock);
	if (c->err || c->n == 0) {
		r = c->err;
		pthread_rwlock_unlock(&c->lock);
		return r;
	}
	items = malloc(c->n * sizeof(*items));
	if (!items) {
		pthread_rwlock_unlock(&c->lock);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->nbuckets; i++)
		for (struct entry *e = c->buckets[i]; e; e = e->next) {
			e->pinned = 1;
			items[n++] = (struct item){ e->block, e->data };
		}
	base = c->root;
	pthread_rwlock_unlock(&c->lock);

	qsort(items, n, sizeof(*items), item_cmp);
	r = write_pack(c, items, n, &base, &root);
	if (r >= 0)
		r = ferry_image_open(c->cc, &root, c->size, &img);
	if (r < 0)
		log_error_errno(r, "clone %s: flush of %zu blocks failed%s", c->label, n,
				r == -ESTALE ? " (the clone was changed by another writer)" :
				r == -ENOENT ? " (the failover was removed)" :
					       "");

	pthread_rwlock_wrlock(&c->lock);
	if (r >= 0) {
		struct ferry_image *old = c->img;

		c->img = img;
		img = old;
		c->root = root;
		c->mtime_ns = ferry_now_ns();
	}
	settle(c, items, n, r >= 0);
	pthread_rwlock_unlock(&c->lock);
	ferry_image_free(img);
	return r;
}

int clone_flush(struct clone *c)
{
	int r;

	if (!c->wv)
		return 0;
	pthread_mutex_lock(&c->flush_lock);
	r = flush_locked(c);
	pthread_mutex_unlock(&c->flush_lock);
	return r;
}

void clone_discard(struct clone *c, int err)
{
	assert(err < 0);
	pthread_rwlock_wrlock(&c->lock);
	c->err = err;
	drop_all(c);
	pthread_rwlock_unlock(&c->lock);
}
