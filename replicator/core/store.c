/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The content-addressed store: objects compressed with zstd into pack files
 * (docs/format/pack.md) kept on a blobs location as packs/<16 hex>.pack.
 * A pack writer builds one pack in memory (compressing as objects arrive,
 * into the final buffer, with a reused zstd context) and publishes it with
 * one exclusive put, so a pack is either whole or absent. Reads are the hot
 * path of ferryfs: they are thread-safe, go through a small cache of open
 * pack fds with pread on a local location, reuse a per-thread zstd context
 * and buffer, and verify every byte (entry checksum, then SHA-256 == id).
 * On object storage a request costs far more than its bytes, so a reader
 * may fetch entries that lie back to back in one pack with one ranged read
 * (ferry_store_read_run), each verified as ferry_store_read verifies it.
 * The format itself (encoding, parsing, validation) is pack.c's.
 */
#include "ferry/store.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "ferry/blobs.h"
#include "ferry/diskcache.h"
#include "ferry/util.h"
#include "pack-internal.h"

/* Level 1: on the benchmark image 1.7 % larger than level 3 and the
 * replicator 1.3x faster (docs/benchmarks.md). */
#define ZSTD_LEVEL 1
/* Open pack fds kept per store; ferryfs reads scattered over many packs. */
#define FD_CACHE_SIZE 64
/* A writer refuses to grow past this even if its caller never checks
 * ferry_pack_writer_bytes(): memory stays bounded. Generous, because a
 * caller may put a whole segment (up to 64 MiB plain, plus map nodes) in
 * one pack. */
#define PACK_HARD_LIMIT (8ull * FERRY_PACK_TARGET)
/* How much of a pack's end to fetch speculatively for its index: enough for
 * a typical pack's whole index in the same round trip as the footer. */
#define INDEX_TAIL_GUESS (128u * 1024u)

/* --- per-thread read state --- */

/* ferryfs reads from many threads; each keeps its own decompression
 * context and entry buffer, so reads neither lock nor allocate. */
struct tls_state {
	ZSTD_DCtx *dctx;
	uint8_t *buf;
	size_t cap;
};

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int tls_key_ok;

static void tls_free(void *p)
{
	struct tls_state *t = p;
	if (!t)
		return;
	ZSTD_freeDCtx(t->dctx);
	free(t->buf);
	free(t);
}

static void tls_init(void)
{
	tls_key_ok = pthread_key_create(&tls_key, tls_free) == 0;
}

static struct tls_state *tls_get(size_t need)
{
	pthread_once(&tls_once, tls_init);
	if (!tls_key_ok)
		return NULL;
	struct tls_state *t = pthread_getspecific(tls_key);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return NULL;
		t->dctx = ZSTD_createDCtx();
		if (!t->dctx || pthread_setspecific(tls_key, t) != 0) {
			tls_free(t);
			return NULL;
		}
	}
	if (t->cap < need) {
		/* Grow geometrically up to the largest possible entry, so a
		 * thread settles after a few reads. */
		size_t cap =
			MAX(need, MIN(t->cap * 2, (size_t)PACK_ENTRY_HEADER_SIZE + FERRY_OBJ_MAX));
		uint8_t *b = malloc(cap);
		if (!b)
			return NULL;
		free(t->buf);
		t->buf = b;
		t->cap = cap;
	}
	return t;
}

/* --- the store --- */

struct fd_slot {
	uint64_t pack;
	uint64_t used;
	int fd;
	unsigned refs;
	bool valid, dead;
};

struct ferry_store {
	struct ferry_blobs *blobs;
	pthread_mutex_t lock;
	struct fd_slot fds[FD_CACHE_SIZE];
	uint64_t tick;
	ZSTD_CCtx *spare_cctx;          /* handed from one writer to the next */
	struct ferry_diskcache *dcache; /* not ours; consulted for remote reads */
};

static void pack_name(char buf[32], uint64_t pack)
{
	snprintf(buf, 32, "packs/%016llx.pack", (unsigned long long)pack);
}

int ferry_store_open(const char *url, int create, struct ferry_store **ret)
{
	struct ferry_store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int r = pthread_mutex_init(&s->lock, NULL);
	if (r != 0) {
		free(s);
		return -r;
	}
	r = ferry_blobs_open(url, create, &s->blobs);
	if (r < 0) {
		ferry_store_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

struct ferry_store *ferry_store_free(struct ferry_store *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < FD_CACHE_SIZE; i++)
		if (s->fds[i].valid)
			close(s->fds[i].fd);
	ZSTD_freeCCtx(s->spare_cctx);
	ferry_blobs_free(s->blobs);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return NULL;
}

const char *ferry_store_url(const struct ferry_store *s)
{
	return ferry_blobs_url(s->blobs);
}

struct ferry_blobs *ferry_store_blobs(struct ferry_store *s)
{
	return s->blobs;
}

int ferry_store_set_disk_cache(struct ferry_store *s, struct ferry_diskcache *dc)
{
	__atomic_store_n(&s->dcache, dc, __ATOMIC_RELEASE);
	return 0;
}

static struct fd_slot *slot_find(struct ferry_store *s, uint64_t pack)
{
	for (size_t i = 0; i < FD_CACHE_SIZE; i++)
		if (s->fds[i].valid && !s->fds[i].dead && s->fds[i].pack == pack)
			return &s->fds[i];
	return NULL;
}

/*
 * An fd for pack with a reference held: *ret_slot is the cache slot to
 * release, or NULL when the cache was full of busy fds and the caller owns
 * (and must close) the fd. Slots are refcounted so that eviction never
 * closes an fd another thread is reading from.
 */
static int pack_fd_get(struct ferry_store *s, const char *dir, uint64_t pack,
		       struct fd_slot **ret_slot, int *ret_fd)
{
	pthread_mutex_lock(&s->lock);
	struct fd_slot *slot = slot_find(s, pack);
	if (slot) {
		slot->refs++;
		slot->used = ++s->tick;
		pthread_mutex_unlock(&s->lock);
		*ret_slot = slot;
		*ret_fd = slot->fd;
		return 0;
	}
	pthread_mutex_unlock(&s->lock);

	char name[32], path[PATH_MAX];
	pack_name(name, pack);
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;

	pthread_mutex_lock(&s->lock);
	slot = slot_find(s, pack);
	if (slot) { /* another thread opened it meanwhile */
		close(fd);
		slot->refs++;
		slot->used = ++s->tick;
		fd = slot->fd;
	} else {
		for (size_t i = 0; i < FD_CACHE_SIZE; i++) {
			struct fd_slot *c = &s->fds[i];
			if (!c->valid) {
				slot = c;
				break;
			}
			if (c->refs == 0 && (!slot || c->used < slot->used))
				slot = c;
		}
		if (slot) {
			if (slot->valid)
				close(slot->fd);
			*slot = (struct fd_slot){
				.pack = pack,
				.used = ++s->tick,
				.fd = fd,
				.refs = 1,
				.valid = true,
			};
		}
	}
	pthread_mutex_unlock(&s->lock);
	*ret_slot = slot;
	*ret_fd = fd;
	return 0;
}

static void pack_fd_put(struct ferry_store *s, struct fd_slot *slot, int fd)
{
	if (!slot) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (--slot->refs == 0 && slot->dead) {
		close(slot->fd);
		*slot = (struct fd_slot){ .fd = -1 };
	}
	pthread_mutex_unlock(&s->lock);
}

static int pack_read(struct ferry_store *s, uint64_t pack, uint64_t off, void *buf, size_t len)
{
	if (off > (uint64_t)INT64_MAX - len)
		return -EBADMSG;
	const char *dir = ferry_blobs_local_dir(s->blobs);
	if (!dir) {
		char name[32];
		pack_name(name, pack);
		return ferry_blobs_get_range(s->blobs, name, off, buf, len);
	}
	struct fd_slot *slot;
	int fd;
	int r = pack_fd_get(s, dir, pack, &slot, &fd);
	if (r < 0)
		return r;
	r = ferry_pread_all(fd, buf, len, (off_t)off);
	pack_fd_put(s, slot, fd);
	return r;
}

static int pack_size(struct ferry_store *s, uint64_t pack, uint64_t *ret)
{
	const char *dir = ferry_blobs_local_dir(s->blobs);
	if (!dir) {
		char name[32];
		pack_name(name, pack);
		return ferry_blobs_size(s->blobs, name, ret);
	}
	struct fd_slot *slot;
	int fd;
	int r = pack_fd_get(s, dir, pack, &slot, &fd);
	if (r < 0)
		return r;
	struct stat st;
	r = fstat(fd, &st) < 0 ? -errno : 0;
	pack_fd_put(s, slot, fd);
	if (r < 0)
		return r;
	*ret = (uint64_t)st.st_size;
	return 0;
}

/* The disk cache, where it is in use: it only pays where a read is a
 * network round trip. ferry_blobs_local_dir() is also NULL under a fault
 * callback, so tests reach the cached path with a local store. */
static struct ferry_diskcache *disk_cache(struct ferry_store *s)
{
	struct ferry_diskcache *dc = __atomic_load_n(&s->dcache, __ATOMIC_ACQUIRE);
	return dc && !ferry_blobs_local_dir(s->blobs) ? dc : NULL;
}

/* The checks on loc shared by the read paths, and the thread's buffer for
 * its entry. */
static int read_prepare(const struct ferry_loc *loc, const struct ferry_id *id, const void *buf,
			size_t bufsize, struct tls_state **ret)
{
	if (!loc || !id || (!buf && bufsize))
		return -EINVAL;
	if (loc->plen > bufsize)
		return -ENOBUFS;
	/* loc comes from the catalog, i.e. from disk: bad values are damage. */
	if (!pack_loc_valid(loc))
		return -EBADMSG;
	struct tls_state *t = tls_get(PACK_ENTRY_HEADER_SIZE + (size_t)loc->clen);
	if (!t)
		return -ENOMEM;
	*ret = t;
	return 0;
}

static int read_cached(struct ferry_diskcache *dc, struct tls_state *t, const struct ferry_loc *loc,
		       const struct ferry_id *id, void *buf, size_t bufsize)
{
	size_t need = PACK_ENTRY_HEADER_SIZE + (size_t)loc->clen;
	int r = ferry_diskcache_get(dc, id, t->buf, need);
	if (r < 0)
		return r;
	/* The cached entry holds the pack's own bytes: the same checks
	 * (sizes, entry checksum, SHA-256 == id) apply. */
	r = pack_entry_decode(t->buf, loc, -1, id, buf, bufsize, t->dctx);
	if (r < 0) {
		(void)ferry_diskcache_drop(dc, id);
		return -ENOENT;
	}
	return 0;
}

int ferry_store_read(struct ferry_store *s, const struct ferry_loc *loc, const struct ferry_id *id,
		     void *buf, size_t bufsize)
{
	struct tls_state *t;
	if (!s)
		return -EINVAL;
	int r = read_prepare(loc, id, buf, bufsize, &t);
	if (r < 0)
		return r;
	struct ferry_diskcache *dc = disk_cache(s);
	if (dc && read_cached(dc, t, loc, id, buf, bufsize) >= 0)
		return 0;

	size_t need = PACK_ENTRY_HEADER_SIZE + (size_t)loc->clen;
	r = pack_read(s, loc->pack, loc->offset, t->buf, need);
	if (r < 0)
		return r;
	r = pack_entry_decode(t->buf, loc, -1, id, buf, bufsize, t->dctx);
	/* A cache that cannot take it (full disk, read-only) costs only the
	 * next read another GET. */
	if (r >= 0 && dc)
		(void)ferry_diskcache_put(dc, id, t->buf, need);
	return r;
}

int ferry_store_read_cached(struct ferry_store *s, const struct ferry_loc *loc,
			    const struct ferry_id *id, void *buf, size_t bufsize)
{
	struct tls_state *t;
	if (!s)
		return -EINVAL;
	struct ferry_diskcache *dc = disk_cache(s);
	if (!dc)
		return -ENOENT;
	int r = read_prepare(loc, id, buf, bufsize, &t);
	if (r < 0)
		return r;
	return read_cached(dc, t, loc, id, buf, bufsize);
}

void ferry_store_cache_fill(struct ferry_store *s, const struct ferry_id *id, const void *entry,
			    size_t len)
{
	struct ferry_diskcache *dc = s && id && entry ? disk_cache(s) : NULL;
	if (dc)
		(void)ferry_diskcache_put(dc, id, entry, len);
}

int ferry_store_remote(const struct ferry_store *s)
{
	return !ferry_blobs_local_dir(s->blobs);
}

uint64_t ferry_store_entry_end(const struct ferry_loc *loc)
{
	return loc->offset + PACK_ENTRY_HEADER_SIZE + (uint64_t)loc->clen;
}

/* The checks of ferry_store_read_run and its one ranged read: *ret_raw gets
 * the bytes of every entry of the run, from reads[0]'s on. */
static int run_fetch(struct ferry_store *s, const struct ferry_store_read *reads, size_t n,
		     uint8_t **ret_raw, struct tls_state **ret_t)
{
	struct tls_state *t = NULL;

	if (!s || n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct ferry_store_read *q = &reads[i];
		/* Each entry as a single read checks it; then back to back. */
		int r = read_prepare(&q->loc, q->id, q->buf, q->bufsize, &t);
		if (r < 0)
			return r;
		if (i > 0 && (q->loc.pack != reads[0].loc.pack ||
			      q->loc.offset != ferry_store_entry_end(&reads[i - 1].loc)))
			return -EINVAL;
	}
	uint64_t base = reads[0].loc.offset;
	uint64_t len = ferry_store_entry_end(&reads[n - 1].loc) - base;
	if (len > SIZE_MAX / 2)
		return -EFBIG;
	_cleanup_free_ uint8_t *raw = malloc((size_t)len);
	if (!raw)
		return -ENOMEM;
	int r = pack_read(s, reads[0].loc.pack, base, raw, (size_t)len);
	if (r < 0)
		return r;
	*ret_raw = TAKE_PTR(raw);
	*ret_t = t;
	return 0;
}

int ferry_store_read_run(struct ferry_store *s, struct ferry_store_read *reads, size_t n)
{
	_cleanup_free_ uint8_t *raw = NULL;
	struct tls_state *t;
	int good = 0;

	int r = run_fetch(s, reads, n, &raw, &t);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			reads[i].r = r;
		return r;
	}
	struct ferry_diskcache *dc = disk_cache(s);
	for (size_t i = 0; i < n; i++) {
		struct ferry_store_read *q = &reads[i];
		const uint8_t *entry = raw + (q->loc.offset - reads[0].loc.offset);

		q->r = pack_entry_decode(entry, &q->loc, -1, q->id, q->buf, q->bufsize, t->dctx);
		if (q->r < 0)
			continue;
		good++;
		/* As in ferry_store_read: a cache that cannot take it costs
		 * only a later GET. */
		if (dc)
			(void)ferry_diskcache_put(dc, q->id, entry,
						  PACK_ENTRY_HEADER_SIZE + (size_t)q->loc.clen);
	}
	return good;
}

struct list_ctx {
	int (*cb)(uint64_t pack, uint64_t size, void *userdata);
	void *userdata;
};

static int list_one(const char *name, uint64_t size, void *userdata)
{
	struct list_ctx *c = userdata;
	/* Only names we would have written: packs/<16 lowercase hex>.pack. */
	if (strlen(name) != 27 || strcmp(name + 22, ".pack") != 0)
		return 0;
	uint64_t pack = 0;
	for (size_t i = 6; i < 22; i++) {
		char ch = name[i];
		unsigned v;
		if (ch >= '0' && ch <= '9')
			v = (unsigned)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v = (unsigned)(ch - 'a' + 10);
		else
			return 0;
		pack = pack << 4 | v;
	}
	return c->cb(pack, size, c->userdata);
}

int ferry_store_list_packs(struct ferry_store *s,
			   int (*cb)(uint64_t pack, uint64_t size, void *userdata), void *userdata)
{
	struct list_ctx c = { cb, userdata };
	return ferry_blobs_list(s->blobs, "packs/", list_one, &c);
}

int ferry_store_pack_index(struct ferry_store *s, uint64_t pack, int read_data,
			   int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
				     void *userdata),
			   void *userdata)
{
	uint64_t size;
	int r = pack_size(s, pack, &size);
	if (r < 0)
		return r;
	if (size < PACK_HEADER_SIZE + PACK_FOOTER_SIZE)
		return -EBADMSG;
	/* The writer stops at PACK_HARD_LIMIT stored bytes; its index adds
	 * less than as much again. A larger file is not one of ours, and is
	 * not read whole into memory. */
	if (size > 2 * PACK_HARD_LIMIT || size > SIZE_MAX / 2)
		return -EFBIG;

	if (read_data) {
		/* Verifying everything reads everything; one read, then the
		 * same parser the fuzzer exercises. */
		_cleanup_free_ uint8_t *img = malloc((size_t)size);
		if (!img)
			return -ENOMEM;
		r = pack_read(s, pack, 0, img, (size_t)size);
		if (r < 0)
			return r;
		return pack_parse_named(img, (size_t)size, pack, 1, cb, userdata);
	}

	/* Index only: the header and the pack's tail (footer and, usually,
	 * the whole index in the same read). */
	uint8_t header[PACK_HEADER_SIZE];
	r = pack_read(s, pack, 0, header, sizeof(header));
	if (r < 0)
		return r;
	size_t tail_len = (size_t)MIN(size - PACK_HEADER_SIZE, (uint64_t)INDEX_TAIL_GUESS);
	_cleanup_free_ uint8_t *tail = malloc(tail_len);
	if (!tail)
		return -ENOMEM;
	r = pack_read(s, pack, size - tail_len, tail, tail_len);
	if (r < 0)
		return r;
	struct pack_footer f;
	r = pack_footer_parse(tail + tail_len - PACK_FOOTER_SIZE, size, &f);
	if (r < 0)
		return r;
	if (f.pack_id != pack)
		return -EBADMSG;
	size_t index_len = (size_t)f.count * PACK_INDEX_RECORD_SIZE;
	const uint8_t *records;
	_cleanup_free_ uint8_t *big = NULL;
	if (index_len + PACK_FOOTER_SIZE <= tail_len)
		records = tail + tail_len - PACK_FOOTER_SIZE - index_len;
	else {
		big = malloc(index_len ? index_len : 1);
		if (!big)
			return -ENOMEM;
		r = pack_read(s, pack, f.index_offset, big, index_len);
		if (r < 0)
			return r;
		records = big;
	}
	r = pack_index_verify(header, records, &f);
	if (r < 0)
		return r;
	for (uint32_t i = 0; cb && i < f.count; i++) {
		struct pack_record rec;
		pack_index_record(records, i, pack, &rec);
		r = cb(&rec.id, &rec.loc, userdata);
		if (r < 0)
			return r;
	}
	return 0;
}

int ferry_store_delete_pack(struct ferry_store *s, uint64_t pack)
{
	char name[32];
	pack_name(name, pack);
	int r = ferry_blobs_delete(s->blobs, name);
	if (r < 0)
		return r;
	/* Drop the cached fd, or the deleted file's space stays in use. */
	pthread_mutex_lock(&s->lock);
	struct fd_slot *slot = slot_find(s, pack);
	if (slot) {
		if (slot->refs == 0) {
			close(slot->fd);
			*slot = (struct fd_slot){ .fd = -1 };
		} else
			slot->dead = true;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* --- the pack writer --- */

struct ferry_pack_writer {
	struct ferry_store *s;
	uint64_t id;
	uint8_t *buf; /* header and entries; index and footer appended at finish */
	size_t len, cap;
	struct pack_record *recs;
	uint32_t n, rcap;
	uint32_t *ht; /* open addressing, record index + 1, 0 = empty */
	uint32_t ht_mask;
	ZSTD_CCtx *cctx;
	bool finished;
};

static int buf_reserve(struct ferry_pack_writer *w, size_t more)
{
	if (w->cap - w->len >= more)
		return 0;
	size_t cap = MAX(w->cap, (size_t)256 * 1024);
	while (cap - w->len < more)
		cap *= 2;
	/* glibc grows large blocks with mremap: no copy of the pack so far. */
	uint8_t *b = realloc(w->buf, cap);
	if (!b)
		return -ENOMEM;
	w->buf = b;
	w->cap = cap;
	return 0;
}

static uint32_t *ht_slot(struct ferry_pack_writer *w, const struct ferry_id *id)
{
	/* Ids are SHA-256 output: any 8 bytes are already a good hash. */
	uint64_t h;
	memcpy(&h, id->b, sizeof(h));
	for (uint32_t i = (uint32_t)h & w->ht_mask;; i = (i + 1) & w->ht_mask) {
		uint32_t v = w->ht[i];
		if (v == 0 || ferry_id_equal(&w->recs[v - 1].id, id))
			return &w->ht[i];
	}
}

static int ht_grow(struct ferry_pack_writer *w)
{
	uint32_t size = w->ht ? (w->ht_mask + 1) * 2 : 1024;
	uint32_t *old = w->ht;
	w->ht = calloc(size, sizeof(uint32_t));
	if (!w->ht) {
		w->ht = old;
		return -ENOMEM;
	}
	w->ht_mask = size - 1;
	for (uint32_t i = 0; i < w->n; i++)
		*ht_slot(w, &w->recs[i].id) = i + 1;
	free(old);
	return 0;
}

int ferry_store_pack_begin(struct ferry_store *s, struct ferry_pack_writer **ret)
{
	_cleanup_free_ struct ferry_pack_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->s = s;
	do {
		if (getrandom(&w->id, sizeof(w->id), 0) != sizeof(w->id))
			return -errno ?: -EIO;
	} while (w->id == 0); /* keep 0 free as "no pack" for callers */

	pthread_mutex_lock(&s->lock);
	w->cctx = TAKE_PTR(s->spare_cctx);
	pthread_mutex_unlock(&s->lock);
	if (!w->cctx)
		w->cctx = ZSTD_createCCtx();
	int r = w->cctx ? buf_reserve(w, PACK_HEADER_SIZE) : -ENOMEM;
	if (r >= 0)
		r = ht_grow(w);
	if (r < 0) {
		ferry_pack_writer_free(TAKE_PTR(w));
		return r;
	}
	pack_header_encode(w->buf, w->id);
	w->len = PACK_HEADER_SIZE;
	*ret = TAKE_PTR(w);
	return 0;
}

int ferry_pack_writer_find(struct ferry_pack_writer *w, const struct ferry_id *id,
			   struct ferry_loc *ret)
{
	uint32_t v = *ht_slot(w, id);
	if (v == 0)
		return 0;
	if (ret)
		*ret = w->recs[v - 1].loc;
	return 1;
}

/* Returns 0 when the object was added, 1 when this pack already held it. */
static int add_entry(struct ferry_pack_writer *w, enum ferry_obj_type type,
		     const struct ferry_id *id, const void *buf, size_t len, const void *frame,
		     size_t flen, struct ferry_loc *ret)
{
	if (!w || !id || (!buf && len) || !pack_type_valid((uint8_t)type) || w->finished)
		return -EINVAL;
	if (len > FERRY_OBJ_MAX)
		return -EFBIG;
	uint32_t *hs = ht_slot(w, id);
	if (*hs) {
		if (ret)
			*ret = w->recs[*hs - 1].loc;
		return 1;
	}
	if (w->len >= PACK_HARD_LIMIT)
		return -E2BIG;

	if (w->n == w->rcap) {
		uint32_t rcap = w->rcap ? w->rcap * 2 : 256;
		struct pack_record *recs = realloc(w->recs, rcap * sizeof(*recs));
		if (!recs)
			return -ENOMEM;
		w->recs = recs;
		w->rcap = rcap;
	}
	/* Room for the object stored raw, which is the most we ever store. */
	int r = buf_reserve(w, PACK_ENTRY_HEADER_SIZE + len);
	if (r < 0)
		return r;

	uint8_t *e = w->buf + w->len;
	uint8_t flags = 0;
	size_t clen = len;
	if (frame && flen > 0 && flen < len) {
		memcpy(e + PACK_ENTRY_HEADER_SIZE, frame, flen);
		flags = PACK_FLAG_ZSTD;
		clen = flen;
	} else if (!frame && len > 1) {
		/* Compress straight into the pack; a destination one byte short
		 * of raw makes zstd give up exactly when compression does not
		 * help (and give up early on incompressible data), and any
		 * failure simply means "store raw". The one-shot API beats
		 * ZSTD_compress2() here by a wide margin when dst is that
		 * tight. No frame checksum: the entry checksum and id cover it. */
		size_t z = ZSTD_compressCCtx(w->cctx, e + PACK_ENTRY_HEADER_SIZE, len - 1, buf, len,
					     ZSTD_LEVEL);
		if (!ZSTD_isError(z) && z < len) {
			flags = PACK_FLAG_ZSTD;
			clen = z;
		}
	}
	if (!flags && len)
		memcpy(e + PACK_ENTRY_HEADER_SIZE, buf, len);
	pack_entry_header_encode(e, (uint8_t)type, flags, (uint32_t)len, (uint32_t)clen, id);
	pack_entry_seal(e);

	struct pack_record *rec = &w->recs[w->n];
	rec->id = *id;
	rec->flags = flags;
	rec->loc = (struct ferry_loc){
		.pack = w->id,
		.offset = w->len,
		.clen = (uint32_t)clen,
		.plen = (uint32_t)len,
		.type = (uint8_t)type,
	};
	*hs = ++w->n;
	w->len += PACK_ENTRY_HEADER_SIZE + clen;
	if (ret)
		*ret = rec->loc;
	/* Keep the table at most half full. */
	if ((uint64_t)w->n * 2 > (uint64_t)w->ht_mask + 1)
		(void)ht_grow(w); /* on failure the table just gets fuller */
	return 0;
}

int ferry_pack_writer_add(struct ferry_pack_writer *w, enum ferry_obj_type type,
			  const struct ferry_id *id, const void *buf, size_t len,
			  struct ferry_loc *ret)
{
	return add_entry(w, type, id, buf, len, NULL, 0, ret);
}

int ferry_pack_writer_add_frame(struct ferry_pack_writer *w, enum ferry_obj_type type,
				const struct ferry_id *id, const void *buf, size_t len,
				const void *frame, size_t flen, struct ferry_loc *ret)
{
	if (!frame)
		return -EINVAL;
	return add_entry(w, type, id, buf, len, frame, flen, ret);
}

uint64_t ferry_pack_writer_bytes(const struct ferry_pack_writer *w)
{
	return w->len;
}

uint32_t ferry_pack_writer_count(const struct ferry_pack_writer *w)
{
	return w->n;
}

uint64_t ferry_pack_writer_id(const struct ferry_pack_writer *w)
{
	return w->id;
}

int ferry_pack_writer_finish(struct ferry_pack_writer *w)
{
	if (w->finished)
		return 0;
	if (w->n == 0) {
		w->finished = true;
		return 0;
	}
	size_t index_len = (size_t)w->n * PACK_INDEX_RECORD_SIZE;
	int r = buf_reserve(w, index_len + PACK_FOOTER_SIZE);
	if (r < 0)
		return r;
	/* Index and footer go after w->len without moving it, so a failed
	 * put can be retried. */
	r = pack_trailer_encode(w->buf + w->len, w->buf, w->id, w->len, w->recs, w->n);
	if (r < 0)
		return r;

	char name[32];
	pack_name(name, w->id);
	r = ferry_blobs_put(w->s->blobs, name, w->buf, w->len + index_len + PACK_FOOTER_SIZE, 1);
	if (r < 0)
		return r;
	w->finished = true;
	/* Locations stay answerable through find(); the bytes are on disk. */
	free(w->buf);
	w->buf = NULL;
	w->cap = 0;
	return 0;
}

struct ferry_pack_writer *ferry_pack_writer_free(struct ferry_pack_writer *w)
{
	if (!w)
		return NULL;
	if (w->cctx) {
		pthread_mutex_lock(&w->s->lock);
		if (!w->s->spare_cctx)
			w->s->spare_cctx = TAKE_PTR(w->cctx);
		pthread_mutex_unlock(&w->s->lock);
		ZSTD_freeCCtx(w->cctx);
	}
	free(w->buf);
	free(w->recs);
	free(w->ht);
	free(w);
	return NULL;
}
