/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Images read back out of a real vault against a reference buffer: a vault
 * is built with the store's pack writer, the catalog's object index and a
 * map committed into the same pack; then whole, random and end-straddling
 * reads, through caches large and tiny (constant eviction) and from several
 * threads at once, SEEK_DATA/SEEK_HOLE against a brute-force answer, empty
 * and zero-length images, and damage: a map pointing past a chunk's end, a
 * flipped byte in a pack, a chunk missing from the catalog. Zero-copy
 * reads (pieces of cached chunks) are checked the same ways. Last, GC
 * rewrites the pack under readers that remember where its chunks were, on
 * a local store and through the fault seam (which makes the store look
 * remote, so read-ahead coalesces): the bytes stay the same, and a deleted
 * pack costs one failed read, not one per chunk.
 */
#include "ferry/image.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/blobs.h"
#include "ferry/catalog.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "tap.h"

#define CHUNK (64u * 1024u)
#define CHUNK_BLOCKS (CHUNK / FERRY_BLOCK_SIZE)
/* 5 MiB and a partial block: the last block is cut at the image's end. */
#define SIZE (5ull * 1024 * 1024 + 1000)
#define NBLOCKS DIV_ROUND_UP(SIZE, FERRY_BLOCK_SIZE)

/* ---- a writer: everything added goes into one pack, indexed at the end ---- */

struct added {
	struct ferry_id id;
	struct ferry_loc loc;
	void *buf; /* map nodes stay readable before the pack is finished */
	size_t len;
};

struct writer {
	struct ferry_vault *v;
	struct ferry_pack_writer *w;
	struct added *a;
	size_t n;
	struct ferry_objsrc src;
};

static int writer_add(struct writer *w, enum ferry_obj_type type, const void *buf, size_t len,
		      struct ferry_id *ret)
{
	struct ferry_id id;
	struct added *p;
	int r;

	ferry_sha256(buf, len, &id);
	p = realloc(w->a, (w->n + 1) * sizeof(*w->a));
	if (!p)
		return -ENOMEM;
	w->a = p;
	p = &w->a[w->n];
	*p = (struct added){ .id = id };
	r = ferry_pack_writer_add(w->w, type, &id, buf, len, &p->loc);
	if (r < 0)
		return r;
	if (type == FERRY_OBJ_NODE) {
		p->buf = malloc(len);
		if (!p->buf)
			return -ENOMEM;
		memcpy(p->buf, buf, len);
		p->len = len;
	}
	w->n++;
	if (ret)
		*ret = id;
	return 0;
}

static int w_get(void *userdata, const struct ferry_id *id, void **ret_buf, size_t *ret_len)
{
	struct writer *w = userdata;

	for (size_t i = 0; i < w->n; i++)
		if (w->a[i].buf && ferry_id_equal(&w->a[i].id, id)) {
			void *b = malloc(w->a[i].len + 1);

			if (!b)
				return -ENOMEM;
			memcpy(b, w->a[i].buf, w->a[i].len);
			*ret_buf = b;
			*ret_len = w->a[i].len;
			return 0;
		}
	return ferry_vault_read_object(w->v, id, ret_buf, ret_len);
}

static int w_put(void *userdata, const struct ferry_id *id, const void *buf, size_t len)
{
	return writer_add(userdata, FERRY_OBJ_NODE, buf, len, NULL);
}

static int writer_begin(struct writer *w, struct ferry_vault *v)
{
	*w = (struct writer){ .v = v };
	w->src = (struct ferry_objsrc){ w_get, w_put, w };
	return ferry_store_pack_begin(ferry_vault_store(v), &w->w);
}

static int writer_finish(struct writer *w)
{
	struct ferry_catalog *c = ferry_vault_catalog(w->v);
	int r;

	r = ferry_pack_writer_finish(w->w);
	for (size_t i = 0; r >= 0 && i < w->n; i++)
		r = ferry_catalog_object_put(c, &w->a[i].id, &w->a[i].loc);
	if (r >= 0)
		r = ferry_catalog_pack_add(c, ferry_pack_writer_id(w->w),
					   ferry_pack_writer_bytes(w->w),
					   ferry_pack_writer_count(w->w), 0);
	ferry_pack_writer_free(w->w);
	for (size_t i = 0; i < w->n; i++)
		free(w->a[i].buf);
	free(w->a);
	return r;
}

/* ---- the reference disk ---- */

static uint8_t *ref;     /* SIZE bytes (plus the tail of the last block) */
static uint8_t *is_data; /* per block: mapped to a chunk */

static void fill_random(uint8_t *p, size_t n, unsigned *seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rand_r(seed) >> 7);
}

/* Maps blocks [b, b+n) to chunk blocks [cb, cb+n) of a chunk with plain
 * bytes cbuf, and mirrors that in the reference. */
static int map_blocks(struct ferry_map *m, uint64_t b, uint64_t n, const struct ferry_id *chunk,
		      const uint8_t *cbuf, uint32_t cb)
{
	int r = ferry_map_set(m, b, n, chunk, cb);

	if (r < 0)
		return r;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t off = (b + i) * FERRY_BLOCK_SIZE;

		memcpy(ref + off, cbuf + (cb + i) * FERRY_BLOCK_SIZE, FERRY_BLOCK_SIZE);
		is_data[b + i] = 1;
	}
	return 0;
}

struct disk {
	struct ferry_id root;
	struct ferry_id victim; /* a chunk only blocks 1100..1103 use */
	struct ferry_loc victim_loc;
	struct ferry_id bad_root;  /* block 5 points past its chunk's end */
	struct ferry_id lost_root; /* block 7 points at a chunk nobody stored */
	uint64_t main_pack;        /* every other chunk, and most map nodes */
	struct ferry_id first;     /* the chunk of blocks 0..15, in main_pack */
	struct ferry_id tail;      /* the chunk of the last two blocks, in main_pack */
};

static int build(struct ferry_vault *v, struct disk *d)
{
	unsigned seed = 42;
	uint8_t full[3][CHUNK], packed[7 * FERRY_BLOCK_SIZE], shared[CHUNK], tail[CHUNK];
	uint8_t victim[4 * FERRY_BLOCK_SIZE], lost[FERRY_BLOCK_SIZE];
	struct ferry_id idfull[3], idpacked, idshared, idtail, idlost;
	struct ferry_map *m = NULL;
	struct writer w;
	int r;

	ref = calloc(1, NBLOCKS * FERRY_BLOCK_SIZE);
	is_data = calloc(1, NBLOCKS);
	if (!ref || !is_data)
		return -ENOMEM;

	r = writer_begin(&w, v);
	if (r < 0)
		return r;
	for (int i = 0; i < 3; i++) {
		fill_random(full[i], CHUNK, &seed);
		r = writer_add(&w, FERRY_OBJ_CHUNK, full[i], CHUNK, &idfull[i]);
		if (r < 0)
			return r;
	}
	/* a chunk of scattered blocks packed together, shorter than a chunk */
	fill_random(packed, sizeof(packed), &seed);
	memset(packed + 3 * FERRY_BLOCK_SIZE, 0, FERRY_BLOCK_SIZE); /* data that is zeros */
	fill_random(shared, sizeof(shared), &seed);
	fill_random(tail, sizeof(tail), &seed);
	fill_random(victim, sizeof(victim), &seed);
	fill_random(lost, sizeof(lost), &seed);
	if ((r = writer_add(&w, FERRY_OBJ_CHUNK, packed, sizeof(packed), &idpacked)) < 0 ||
	    (r = writer_add(&w, FERRY_OBJ_CHUNK, shared, sizeof(shared), &idshared)) < 0 ||
	    (r = writer_add(&w, FERRY_OBJ_CHUNK, tail, sizeof(tail), &idtail)) < 0)
		return r;
	ferry_sha256(lost, sizeof(lost), &idlost); /* never stored */

	r = ferry_map_open(&w.src, NULL, NBLOCKS, &m);
	if (r < 0)
		return r;
	/* aligned full chunks, as initial replication writes them */
	for (int i = 0; i < 3; i++)
		if ((r = map_blocks(m, i * CHUNK_BLOCKS, CHUNK_BLOCKS, &idfull[i], full[i], 0)) < 0)
			return r;
	/* scattered small writes, across a leaf boundary (512 blocks) */
	if ((r = map_blocks(m, 100, 1, &idpacked, packed, 0)) < 0 ||
	    (r = map_blocks(m, 205, 2, &idpacked, packed, 1)) < 0 ||
	    (r = map_blocks(m, 511, 2, &idpacked, packed, 3)) < 0 ||
	    (r = map_blocks(m, 700, 2, &idpacked, packed, 5)) < 0)
		return r;
	/* one chunk used twice, once from its middle */
	if ((r = map_blocks(m, 600, CHUNK_BLOCKS, &idshared, shared, 0)) < 0 ||
	    (r = map_blocks(m, 900, 5, &idshared, shared, 9)) < 0)
		return r;
	/* a run overwritten in the middle by another */
	if ((r = map_blocks(m, 8, 3, &idshared, shared, 2)) < 0)
		return r;
	/* the partial last block and the one before it */
	if ((r = map_blocks(m, NBLOCKS - 2, 2, &idtail, tail, 14)) < 0)
		return r;
	r = ferry_map_commit(m, &d->root);
	if (r < 0)
		return r;

	/* Damaged variants share everything but one run. */
	if ((r = ferry_map_set(m, 5, 1, &idpacked, 7)) < 0 ||
	    (r = ferry_map_commit(m, &d->bad_root)) < 0 ||
	    (r = ferry_map_set(m, 5, 1, &idfull[0], 5)) < 0 ||
	    (r = ferry_map_set(m, 7, 1, &idlost, 0)) < 0 ||
	    (r = ferry_map_commit(m, &d->lost_root)) < 0)
		return r;
	ferry_map_free(m);
	d->main_pack = w.a[0].loc.pack;
	d->first = idfull[0];
	d->tail = idtail;
	r = writer_finish(&w);
	if (r < 0)
		return r;

	/* The victim lives alone in a second pack, to be damaged later. */
	r = writer_begin(&w, v);
	if (r < 0)
		return r;
	if ((r = writer_add(&w, FERRY_OBJ_CHUNK, victim, sizeof(victim), &d->victim)) < 0)
		return r;
	d->victim_loc = w.a[0].loc;
	r = ferry_map_open(&w.src, &d->root, NBLOCKS, &m);
	if (r < 0)
		return r;
	if ((r = map_blocks(m, 1100, 4, &d->victim, victim, 0)) < 0 ||
	    (r = ferry_map_commit(m, &d->root)) < 0)
		return r;
	ferry_map_free(m);
	return writer_finish(&w);
}

/* ---- checks ---- */

static int check_read(struct ferry_image *img, uint64_t off, size_t len, uint8_t *buf)
{
	size_t want = off >= SIZE ? 0 : (size_t)MIN((uint64_t)len, SIZE - off);
	ssize_t n = ferry_image_read(img, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n != want)
		return -EIO;
	if (want && memcmp(buf, ref + off, want) != 0)
		return -EILSEQ;
	return 0;
}

/* check_read through ferry_image_read_iov: the pieces, gathered, must be
 * the reference; released after. */
static int check_read_iov(struct ferry_image *img, struct ferry_image_iov *v, uint64_t off,
			  size_t len, size_t max_pieces, uint8_t *buf)
{
	size_t want = off >= SIZE ? 0 : (size_t)MIN((uint64_t)len, SIZE - off);
	const struct iovec *iov = NULL;
	size_t niov = 0, got = 0;
	ssize_t n = ferry_image_read_iov(img, len, off, v, max_pieces, &iov, &niov);
	int r = 0;

	if (n < 0)
		return (int)n;
	if (niov > max_pieces)
		r = -E2BIG;
	for (size_t i = 0; r == 0 && i < niov; i++) {
		if (got + iov[i].iov_len > want) {
			r = -EIO;
			break;
		}
		memcpy(buf + got, iov[i].iov_base, iov[i].iov_len);
		got += iov[i].iov_len;
	}
	ferry_image_iov_release(v);
	if (r < 0)
		return r;
	if ((size_t)n != want || got != want)
		return -EIO;
	if (want && memcmp(buf, ref + off, want) != 0)
		return -EILSEQ;
	return 0;
}

static int random_reads_iov(struct ferry_image *img, unsigned seed, int count)
{
	_cleanup_free_ uint8_t *buf = malloc(1024 * 1024);
	struct ferry_image_iov *v = NULL;
	int r = ferry_image_iov_new(&v);

	if (r < 0 || !buf) {
		ferry_image_iov_free(v);
		return r < 0 ? r : -ENOMEM;
	}
	for (int i = 0; i < count && r >= 0; i++) {
		uint64_t off = (uint64_t)rand_r(&seed) % (SIZE + 100);
		size_t len = (size_t)rand_r(&seed) % (1024 * 1024) + 1;

		r = check_read_iov(img, v, off, len, 1024, buf);
		if (r < 0)
			printf("#   iov read of %zu at %llu: %d\n", len, (unsigned long long)off,
			       r);
	}
	ferry_image_iov_free(v);
	return r;
}

static int random_reads(struct ferry_image *img, unsigned seed, int count)
{
	_cleanup_free_ uint8_t *buf = malloc(1024 * 1024);

	if (!buf)
		return -ENOMEM;
	for (int i = 0; i < count; i++) {
		uint64_t off;
		size_t len;
		int r;

		if (rand_r(&seed) % 2) {
			/* block-aligned 4 KiB, as fio randread does */
			off = (uint64_t)(rand_r(&seed) % NBLOCKS) * FERRY_BLOCK_SIZE;
			len = FERRY_BLOCK_SIZE;
		} else {
			off = (uint64_t)rand_r(&seed) % (SIZE + 100);
			len = (size_t)rand_r(&seed) % (1024 * 1024) + 1;
		}
		r = check_read(img, off, len, buf);
		if (r < 0) {
			printf("#   read of %zu at %llu: %d\n", len, (unsigned long long)off, r);
			return r;
		}
	}
	return 0;
}

struct thread_arg {
	struct ferry_image *img;
	unsigned seed;
	int r;
};

static void *reader(void *p)
{
	struct thread_arg *a = p;

	a->r = random_reads(a->img, a->seed, 300);
	return NULL;
}

/* Brute force over blocks: the answer ferry_image_seek must give. */
static int expect_seek(uint64_t off, int whence, uint64_t *ret)
{
	if (off >= SIZE)
		return -ENXIO;
	for (uint64_t b = off / FERRY_BLOCK_SIZE; b < NBLOCKS; b++)
		if (is_data[b] == (whence == SEEK_DATA)) {
			*ret = MAX(off, b * FERRY_BLOCK_SIZE);
			return 0;
		}
	if (whence == SEEK_DATA)
		return -ENXIO;
	*ret = SIZE;
	return 0;
}

static int check_seeks(struct ferry_image *img)
{
	unsigned seed = 7;

	for (int i = 0; i < 3000; i++) {
		uint64_t off = i < 1500 ? (uint64_t)i * 3500 :
					  (uint64_t)rand_r(&seed) % (SIZE + 10);
		int whence = i % 2 ? SEEK_HOLE : SEEK_DATA;
		uint64_t got = 0, want = 0;
		int r1 = ferry_image_seek(img, off, whence, &got);
		int r2 = expect_seek(off, whence, &want);

		if (r1 != r2 || (r1 >= 0 && got != want)) {
			printf("#   seek %s from %llu: got %d/%llu, want %d/%llu\n",
			       whence == SEEK_DATA ? "data" : "hole", (unsigned long long)off, r1,
			       (unsigned long long)got, r2, (unsigned long long)want);
			return -EIO;
		}
	}
	return 0;
}

static int corrupt_pack(const char *vault, const struct ferry_loc *loc)
{
	char path[4096];
	uint8_t byte;
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/store/packs/%016llx.pack", vault,
		 (unsigned long long)loc->pack);
	fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	/* the middle of the stored payload, past any entry header */
	off_t at = (off_t)(loc->offset + 64 + loc->clen / 2);
	if (pread(fd, &byte, 1, at) != 1)
		r = -EIO;
	byte ^= 0x5a;
	if (r >= 0 && pwrite(fd, &byte, 1, at) != 1)
		r = -EIO;
	close(fd);
	return r;
}

/* ---- GC under a reader ---- */

/*
 * What maint.c's rewrite_pack does to a pack, in its three steps: the
 * pack's objects copied into a new pack through the store's writer
 * (gc_copy), the catalog repointed (gc_repoint), then the old pack deleted.
 * Catalog use is under the vault's lock, as read-ahead threads may be
 * asking it meanwhile.
 */
struct rewrite {
	struct ferry_vault *v;
	uint64_t pack, new_pack;
	struct ferry_pack_writer *w;
	struct added *a; /* the objects of pack, with their new locations */
	size_t n;
};

static int rewrite_collect(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct rewrite *rw = userdata;
	struct added *p;

	if (loc->pack != rw->pack)
		return 0;
	p = realloc(rw->a, (rw->n + 1) * sizeof(*rw->a));
	if (!p)
		return -ENOMEM;
	rw->a = p;
	rw->a[rw->n++] = (struct added){ .id = *id, .loc = *loc };
	return 0;
}

static int gc_copy(struct ferry_vault *v, uint64_t pack, struct rewrite *rw)
{
	int r;

	*rw = (struct rewrite){ .v = v, .pack = pack };
	ferry_vault_lock(v);
	r = ferry_catalog_object_list(ferry_vault_catalog(v), rewrite_collect, rw);
	ferry_vault_unlock(v);
	if (r >= 0)
		r = rw->n > 0 ? ferry_store_pack_begin(ferry_vault_store(v), &rw->w) : -ENOENT;
	for (size_t i = 0; r >= 0 && i < rw->n; i++) {
		void *buf = NULL;
		size_t len;

		r = ferry_vault_read_object(v, &rw->a[i].id, &buf, &len);
		if (r >= 0)
			r = ferry_pack_writer_add(rw->w, (enum ferry_obj_type)rw->a[i].loc.type,
						  &rw->a[i].id, buf, len, &rw->a[i].loc);
		free(buf);
	}
	if (r >= 0)
		r = ferry_pack_writer_finish(rw->w);
	if (r >= 0)
		rw->new_pack = ferry_pack_writer_id(rw->w);
	return r;
}

static int gc_repoint(struct rewrite *rw)
{
	struct ferry_catalog *c = ferry_vault_catalog(rw->v);
	int r;

	ferry_vault_lock(rw->v);
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = ferry_catalog_pack_add(c, rw->new_pack, ferry_pack_writer_bytes(rw->w),
					   ferry_pack_writer_count(rw->w), 0);
	for (size_t i = 0; r >= 0 && i < rw->n; i++)
		r = ferry_catalog_object_move(c, &rw->a[i].id, &rw->a[i].loc);
	if (r >= 0)
		r = ferry_catalog_pack_delete(c, rw->pack);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	ferry_vault_unlock(rw->v);
	return r;
}

static void rewrite_done(struct rewrite *rw)
{
	ferry_pack_writer_free(rw->w);
	free(rw->a);
	*rw = (struct rewrite){};
}

static int gc_rewrite(struct ferry_vault *v, uint64_t pack, uint64_t *ret_pack)
{
	struct rewrite rw;
	int r = gc_copy(v, pack, &rw);

	if (r >= 0)
		r = gc_repoint(&rw);
	if (r >= 0)
		r = ferry_store_delete_pack(ferry_vault_store(v), pack);
	if (r >= 0)
		*ret_pack = rw.new_pack;
	rewrite_done(&rw);
	return r;
}

/* Sequential reads of the image in 128 KiB steps (so read-ahead runs),
 * except blocks 1100..1103, whose chunk is damaged by then. */
static int read_undamaged(struct ferry_image *img, uint8_t *buf)
{
	for (uint64_t off = 0; off < SIZE;) {
		uint64_t stop = off < 1100 * 4096 ? 1100 * 4096 : SIZE;
		size_t len = (size_t)MIN((uint64_t)131072, stop - off);
		int r = check_read(img, off, len, buf);

		if (r < 0) {
			printf("#   read of %zu at %llu: %d\n", len, (unsigned long long)off, r);
			return r;
		}
		off += len;
		if (off == 1100 * 4096)
			off = 1104 * 4096;
	}
	return 0;
}

/* Counts the store's reads of one pack, through the fault seam. */
struct watch {
	uint64_t pack; /* atomic */
	unsigned n;    /* atomic */
};

static int watch_reads(const char *op, const char *name, void *ud)
{
	struct watch *w = ud;
	char want[32];

	snprintf(want, sizeof(want), "packs/%016llx.pack",
		 (unsigned long long)__atomic_load_n(&w->pack, __ATOMIC_RELAXED));
	if ((strcmp(op, "get_range") == 0 || strcmp(op, "get") == 0) && strcmp(name, want) == 0)
		__atomic_add_fetch(&w->n, 1, __ATOMIC_RELAXED);
	return 0;
}

static void watch_set(struct watch *w, uint64_t pack)
{
	__atomic_store_n(&w->pack, pack, __ATOMIC_RELAXED);
	__atomic_store_n(&w->n, 0, __ATOMIC_RELAXED);
}

/*
 * GC between a reader's catalog lookup and its read: the first read of the
 * watched pack, once armed, repoints the catalog (the copy is written
 * already) and fails as a deleted pack does.
 */
struct race {
	struct rewrite rw;
	int armed, moved, r;
};

static int race_fault(const char *op, const char *name, void *ud)
{
	struct race *rc = ud;
	char want[32];

	snprintf(want, sizeof(want), "packs/%016llx.pack", (unsigned long long)rc->rw.pack);
	if (!rc->armed || strcmp(name, want) != 0 ||
	    (strcmp(op, "get_range") != 0 && strcmp(op, "get") != 0))
		return 0;
	if (!rc->moved) {
		rc->moved = 1;
		rc->r = gc_repoint(&rc->rw);
	}
	return -ENOENT;
}

static void test_gc_race(struct ferry_vault *v, const struct disk *d, uint64_t pack, uint8_t *buf)
{
	struct ferry_blobs *blobs = ferry_store_blobs(ferry_vault_store(v));
	struct ferry_chunk_cache *cc = NULL;
	struct ferry_image *img = NULL;
	struct race rc = {};
	uint64_t pos;

	ok_r(gc_copy(v, pack, &rc.rw), "GC copied a pack, not yet repointed");
	ferry_blobs_set_fault(blobs, race_fault, &rc);
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &cc), "a fresh cache: no locations known");
	if (cc)
		ok_r(ferry_chunk_cache_set_prefetch(cc, 0, 0), "read-ahead off");
	ok_r(cc ? ferry_image_open(cc, &d->root, SIZE, &img) : -ENOMEM, "image opened");
	if (img) {
		/* The map's nodes, loaded before the race. */
		for (uint64_t b = 0; b < NBLOCKS; b += 256)
			(void)ferry_image_seek(img, b * FERRY_BLOCK_SIZE, SEEK_DATA, &pos);
		rc.armed = 1;
		ok_r(check_read(img, 0, CHUNK, buf),
		     "a chunk GC moved after the catalog answered still reads");
		ok(rc.moved && rc.r >= 0, "the catalog was repointed meanwhile");
		rc.armed = 0;
	}
	ferry_image_free(img);
	ferry_chunk_cache_free(cc);
	ferry_blobs_set_fault(blobs, NULL, NULL);
	ok_r(ferry_store_delete_pack(ferry_vault_store(v), pack), "the old pack deleted");
	rewrite_done(&rc.rw);
}

static void test_gc(struct ferry_vault *v, const struct disk *d, uint8_t *buf)
{
	struct ferry_blobs *blobs = ferry_store_blobs(ferry_vault_store(v));
	struct ferry_chunk_cache *cc = NULL;
	struct ferry_image *img = NULL;
	struct watch watch = {};
	uint64_t pack = d->main_pack, next = 0;
	struct ferry_loc loc = {};
	unsigned n;

	/* Through the seam every read is a request the watch sees, and the
	 * store counts as remote: read-ahead coalesces neighbouring chunks. */
	ferry_blobs_set_fault(blobs, watch_reads, &watch);
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &cc), "a cache over the seam");
	ok(cc && ferry_store_remote(ferry_vault_store(v)), "the store looks remote there");
	if (!cc)
		return;
	ok_r(ferry_chunk_cache_set_prefetch(cc, 64, 4), "read-ahead: 64 chunks, 4 threads");
	ok_r(ferry_image_open(cc, &d->root, SIZE, &img), "image opened");
	if (!img)
		return;
	ok_r(read_undamaged(img, buf), "read sequentially with read-ahead: chunk locations known");
	ok_r(gc_rewrite(v, pack, &next), "GC rewrites their pack and deletes it");
	watch_set(&watch, pack);
	pack = next;
	ferry_chunk_cache_drop(cc);
	ok_r(read_undamaged(img, buf), "read again from the fresh locations, with read-ahead");
	n = __atomic_load_n(&watch.n, __ATOMIC_RELAXED);
	/* The reader and each read-ahead thread may each meet it once before
	 * the first of them forgets the pack. */
	ok(n >= 1 && n <= 1 + 4, "the deleted pack was asked %u times", n);

	ok_r(ferry_chunk_cache_set_prefetch(cc, 0, -1), "read-ahead off");
	ok_r(read_undamaged(img, buf), "read, remembering the new locations");
	ok_r(gc_rewrite(v, pack, &next), "GC rewrites that pack too");
	watch_set(&watch, pack);
	pack = next;
	ferry_chunk_cache_drop(cc);
	ok_r(read_undamaged(img, buf), "read again: same bytes");
	n = __atomic_load_n(&watch.n, __ATOMIC_RELAXED);
	ok(n == 1, "one read of the deleted pack, not one per chunk (%u)", n);
	ferry_image_free(img);
	img = NULL;
	ferry_chunk_cache_free(cc);
	cc = NULL;
	ferry_blobs_set_fault(blobs, NULL, NULL);

	/* A local store: reads by pread, locations also learnt from the
	 * pack's index. */
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &cc), "a cache on the local store");
	if (!cc)
		return;
	ok(!ferry_store_remote(ferry_vault_store(v)), "the store is local again");
	ok_r(ferry_image_open(cc, &d->root, SIZE, &img), "image opened");
	if (!img) {
		ferry_chunk_cache_free(cc);
		return;
	}
	ok_r(read_undamaged(img, buf), "read sequentially: chunk locations known");
	ferry_vault_lock(v);
	ok_r(ferry_catalog_object_get(ferry_vault_catalog(v), &d->first, &loc),
	     "where the first chunk is now");
	ferry_vault_unlock(v);
	ok_r(gc_rewrite(v, pack, &next), "GC rewrites their pack and deletes it");
	ok(ferry_store_read(ferry_vault_store(v), &loc, &d->first, buf, CHUNK) == -ENOENT,
	   "there: ENOENT");
	pack = next;
	ferry_chunk_cache_drop(cc);
	ok_r(read_undamaged(img, buf), "read again: same bytes, no error");
	{
		struct ferry_image_iov *pv = NULL;

		ok_r(ferry_image_iov_new(&pv), "piece list");
		ok_r(gc_rewrite(v, pack, &next), "GC again");
		pack = next;
		ferry_chunk_cache_drop(cc);
		ok_r(pv ? check_read_iov(img, pv, 0, 1100 * 4096, 1024, buf) : -ENOMEM,
		     "zero-copy reads after GC: same bytes");
		ferry_image_iov_free(pv);
	}

	/* A chunk the catalog no longer knows, in a pack that is gone: the
	 * error reaches the reader, and only for that chunk. */
	ferry_vault_lock(v);
	ok_r(ferry_catalog_object_delete(ferry_vault_catalog(v), &d->tail),
	     "the last chunk dropped from the catalog");
	ferry_vault_unlock(v);
	ok_r(gc_rewrite(v, pack, &next), "GC rewrites its pack without it");
	ferry_chunk_cache_drop(cc);
	{
		ssize_t got = ferry_image_read(img, buf, 4096, (NBLOCKS - 2) * FERRY_BLOCK_SIZE);

		ok(got == -ENOENT, "reading it: ENOENT (%zd)", got);
	}
	ok_r(check_read(img, 0, 1100 * 4096, buf), "the rest still reads");
	ferry_image_free(img);
	ferry_chunk_cache_free(cc);
	test_gc_race(v, d, next, buf);
}

int main(void)
{
	char dir[] = "/tmp/test-image-XXXXXX", vdir[64];
	struct ferry_chunk_cache *cc = NULL, *tiny = NULL;
	struct ferry_image *img = NULL, *img2 = NULL;
	struct ferry_vault *v = NULL;
	struct ferry_id zero = {};
	struct disk d = {};
	uint64_t pos = 0;
	uint8_t *buf;
	ssize_t n;
	int r;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(vdir, sizeof(vdir), "%s/vault", dir);
	ok_r(ferry_vault_create(vdir, CHUNK, NULL), "vault created");
	ok_r(ferry_vault_open(vdir, 0, &v), "vault opened for writing");
	if (!v)
		return tap_done();
	r = build(v, &d);
	ok_r(r, "vault holds a disk of full, packed, shared and partial chunks");
	ferry_vault_free(v);
	v = NULL;
	if (r < 0)
		return tap_done();

	ok_r(ferry_vault_open(vdir, 1, &v), "vault reopened read-only");
	if (!v)
		return tap_done();
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &cc), "cache of 64 MiB");
	ok_r(ferry_chunk_cache_new(v, 100 * 1024, &tiny), "cache smaller than two chunks");
	ok_r(ferry_image_open(cc, &d.root, SIZE, &img), "image opened");
	if (!img || !tiny)
		return tap_done();
	ok(ferry_image_size(img) == SIZE, "size as given");

	buf = malloc(SIZE + 8192);
	n = ferry_image_read(img, buf, SIZE + 8192, 0);
	ok(n == (ssize_t)SIZE && memcmp(buf, ref, SIZE) == 0, "whole image equals the reference");
	n = ferry_image_read(img, buf, SIZE, 0);
	ok(n == (ssize_t)SIZE && memcmp(buf, ref, SIZE) == 0, "again, from the cache");
	ok(ferry_image_read(img, buf, 4096, SIZE) == 0, "read at the end returns 0");
	ok(ferry_image_read(img, buf, 4096, SIZE + 12345) == 0, "read past the end returns 0");
	ok(ferry_image_read(img, buf, 0, 100) == 0, "empty read");
	ok_r(check_read(img, SIZE - 10, 4096, buf), "read across the end is short");
	ok_r(check_read(img, 100 * 4096 + 4000, 200, buf), "read straddling two runs");
	ok_r(random_reads(img, 1, 2000), "2000 random reads through a large cache");

	ok_r(ferry_image_open(tiny, &d.root, SIZE, &img2), "image on a tiny cache");
	ok_r(random_reads(img2, 2, 1000), "1000 random reads with constant eviction");

	/* Zero-copy reads: the same bytes, as pieces that stay valid while
	 * held, also where the cache evicts them meanwhile. */
	{
		struct ferry_image_iov *pv = NULL;
		const struct iovec *iov;
		size_t niov = 0;

		ok_r(ferry_image_iov_new(&pv), "piece list");
		ok_r(check_read_iov(img, pv, 0, SIZE + 8192, 1024, buf),
		     "whole image as pieces equals the reference");
		ok_r(check_read_iov(img, pv, SIZE - 10, 4096, 1024, buf),
		     "pieces across the end are short");
		ok(ferry_image_read_iov(img, 4096, SIZE + 1, pv, 1024, &iov, &niov) == 0 &&
			   niov == 0,
		   "pieces past the end: none");
		/* Blocks 48..99 are a hole, 100.. data. */
		ok(ferry_image_read_iov(img, 8192, 99 * 4096, pv, 1, &iov, &niov) == -E2BIG,
		   "hole and data in one piece at most: E2BIG");
		ok_r(check_read_iov(img, pv, 99 * 4096, 8192, 2, buf), "in two pieces: fine");
		ok_r(random_reads_iov(img, 3, 500), "500 random reads as pieces");
		ok_r(random_reads_iov(img2, 4, 500),
		     "500 random reads as pieces with constant eviction");
		/* Held chunks outlive eviction; the list frees what it holds. */
		n = ferry_image_read_iov(img2, 1024 * 1024, 0, pv, 1024, &iov, &niov);
		ok(n == 1024 * 1024, "1 MiB held in a cache of 100 KiB");
		ok_r(random_reads(img2, 5, 50), "other reads meanwhile");
		ferry_image_iov_free(pv);
		ok(1, "piece list freed while holding chunks");
	}
	{
		struct thread_arg a[4];
		pthread_t t[4];
		int bad = 0;

		for (int i = 0; i < 4; i++) {
			a[i] = (struct thread_arg){ .img = i % 2 ? img : img2, .seed = 100 + i };
			pthread_create(&t[i], NULL, reader, &a[i]);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			bad |= a[i].r < 0;
		}
		ok(!bad, "4 threads reading one image through each cache");
	}
	ferry_image_free(img2);
	img2 = NULL;

	ok_r(check_seeks(img), "SEEK_DATA/SEEK_HOLE match a brute-force answer");
	ok(ferry_image_seek(img, 0, SEEK_DATA, &pos) == 0 && pos == 0, "data at 0");
	ok(ferry_image_seek(img, 48 * 4096 + 1, SEEK_DATA, &pos) == 0 && pos == 100 * 4096,
	   "data after a hole is the next mapped block");
	ok(ferry_image_seek(img, 1000 * 4096, SEEK_HOLE, &pos) == 0 && pos == 1000 * 4096,
	   "a hole is where it is");
	ok(ferry_image_seek(img, SIZE - 1, SEEK_HOLE, &pos) == 0 && pos == SIZE,
	   "the hole after the last data block is the end");
	ok(ferry_image_seek(img, SIZE, SEEK_DATA, &pos) == -ENXIO, "SEEK_DATA at the end: ENXIO");
	ok(ferry_image_seek(img, 0, SEEK_SET, &pos) == -EINVAL, "other whence: EINVAL");
	ferry_image_free(img);
	img = NULL;

	ok_r(ferry_image_open(cc, &zero, 1ull << 40, &img), "empty map of 1 TiB");
	if (img) {
		memset(buf, 1, 65536);
		n = ferry_image_read(img, buf, 65536, (1ull << 40) - 65536);
		ok(n == 65536 && buf[0] == 0 && buf[65535] == 0, "reads zeros");
		ok(ferry_image_seek(img, 0, SEEK_DATA, &pos) == -ENXIO,
		   "no data in 1 TiB, at once");
		ok(ferry_image_seek(img, 5, SEEK_HOLE, &pos) == 0 && pos == 5, "all hole");
		ferry_image_free(img);
	}
	ok_r(ferry_image_open(cc, NULL, 0, &img), "zero-length image");
	if (img) {
		ok(ferry_image_read(img, buf, 10, 0) == 0, "reads nothing");
		ok(ferry_image_seek(img, 0, SEEK_HOLE, &pos) == -ENXIO, "seeks nowhere");
		ferry_image_free(img);
	}

	ok_r(ferry_image_open(cc, &d.bad_root, SIZE, &img), "map pointing past a chunk's end");
	if (img) {
		ok(ferry_image_read(img, buf, 4096, 5 * 4096) == -EBADMSG, "that block: EBADMSG");
		ok(ferry_image_read(img, buf, SIZE, 0) == -EBADMSG, "a read across it: EBADMSG");
		{
			struct ferry_image_iov *pv = NULL;

			if (ferry_image_iov_new(&pv) >= 0) {
				ok(check_read_iov(img, pv, 0, SIZE, 1024, buf) == -EBADMSG,
				   "as pieces too");
				ferry_image_iov_free(pv);
			}
		}
		ok_r(check_read(img, 6 * 4096, 8192, buf), "its neighbours still read");
		ferry_image_free(img);
	}
	ok_r(ferry_image_open(cc, &d.lost_root, SIZE, &img), "map naming a chunk nobody stored");
	if (img) {
		n = ferry_image_read(img, buf, 4096, 7 * 4096);
		ok(n == -ENOENT || n == -EBADMSG, "that block fails (%zd)", n);
		ferry_image_free(img);
	}

	/* A fresh reader, so the victim is not cached yet. */
	ferry_chunk_cache_free(cc);
	cc = NULL;
	ok_r(corrupt_pack(vdir, &d.victim_loc), "a byte of a stored chunk flipped");
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &cc), "new cache");
	ok_r(ferry_image_open(cc, &d.root, SIZE, &img), "image opened");
	if (img) {
		ok(ferry_image_read(img, buf, 4096, 1101 * 4096) == -EBADMSG,
		   "damaged chunk: EBADMSG");
		ok(ferry_image_read(img, buf, 4096, 1101 * 4096) == -EBADMSG,
		   "again (failures are not cached as data)");
		ok_r(check_read(img, 0, 1100 * 4096, buf), "everything before it still reads");
		ferry_image_free(img);
	}

	/* Read-ahead on worker threads: sequential reads match the reference
	 * except where the damaged chunk is, which still fails; freeing the
	 * cache with chunks still queued is clean. */
	struct ferry_chunk_cache *ra = NULL;
	ok_r(ferry_chunk_cache_new(v, 64ull << 20, &ra), "read-ahead cache");
	if (ra) {
		ok_r(ferry_chunk_cache_set_prefetch(ra, 8, 2), "read-ahead: 8 chunks, 2 threads");
		ok_r(ferry_image_open(ra, &d.root, SIZE, &img), "image opened");
		int wrong = 0, damaged = 0;
		for (uint64_t off = 0; img && off < SIZE; off += 131072) {
			size_t len = (size_t)MIN((uint64_t)131072, SIZE - off);
			n = ferry_image_read(img, buf, len, off);
			if (n == -EBADMSG && off <= 1101 * 4096 && 1101 * 4096 < off + 262144)
				damaged++;
			else if (n != (ssize_t)len || memcmp(buf, ref + off, len) != 0)
				wrong++;
		}
		ok(damaged >= 1 && !wrong,
		   "sequential reads with read-ahead: %d wrong, %d failing at the damage", wrong,
		   damaged);
		ferry_image_free(img);
		img = NULL;
		ok_r(ferry_image_open(ra, &d.root, SIZE, &img), "image reopened");
		if (img) {
			ferry_image_read(img, buf, 65536, 0);
			ferry_image_read(img, buf, 65536, 65536);
			ferry_image_free(img);
		}
		ferry_chunk_cache_free(ra);
		ok(1, "cache freed with read-ahead in flight");
	}

	ferry_chunk_cache_free(cc);
	ferry_chunk_cache_free(tiny);
	ferry_vault_free(v);
	v = NULL;

	ok_r(ferry_vault_open(vdir, 0, &v), "vault reopened for writing, as GC has it");
	if (v)
		test_gc(v, &d, buf);
	ferry_vault_free(v);
	free(buf);
	free(ref);
	free(is_data);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", dir);
	}
	return tap_done();
}
