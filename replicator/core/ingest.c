/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Chunking of written blocks (see ingest.h for the why). Small pieces wait
 * in an accumulator of one chunk's size; their map runs are placed when the
 * accumulator becomes a chunk, which must happen before anything later in
 * the same ingest touches the same blocks.
 */
#include "ferry/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/store.h"
#include "ferry/util.h"

#define NODE_BUCKETS 1024

struct node_entry {
	struct node_entry *next;
	struct ferry_id id;
	size_t len;
	uint8_t data[];
};

struct new_object {
	struct ferry_id id;
	struct ferry_loc loc;
};

struct pending_run {
	struct ferry_map *map;
	uint64_t block;
	uint32_t count;
	uint32_t acc_block; /* first block of the run inside the accumulator */
};

struct ferry_ingest {
	struct ferry_vault *vault;
	uint32_t chunk_blocks;
	struct ferry_pack_writer *pack;
	struct new_object *objects;
	size_t nobjects, aobjects;
	struct node_entry *nodes[NODE_BUCKETS];
	struct ferry_objsrc objsrc;
	uint8_t *acc; /* one chunk of packed small writes */
	uint32_t acc_blocks;
	struct pending_run *runs; /* at most chunk_blocks of them */
	size_t nruns;
	/* Packs holding objects found in the vault rather than stored again:
	 * they get this commit's generation, so GC will not take them
	 * (ingest.h). Repeats are dropped at commit. */
	uint64_t *reused;
	size_t nreused, areused;
	int announced; /* the pack's intent is in the catalog */
	int finished;  /* the pack is durable */
	int committed; /* and recorded */
	int no_vault_dedup;
};

static unsigned bucket(const struct ferry_id *id)
{
	return (unsigned)(get_le32(id->b) % NODE_BUCKETS);
}

static int record_object(struct ferry_ingest *in, const struct ferry_id *id,
			 const struct ferry_loc *loc)
{
	if (in->nobjects == in->aobjects) {
		size_t n = in->aobjects ? in->aobjects * 2 : 256;
		struct new_object *o = realloc(in->objects, n * sizeof(*o));
		if (!o)
			return -ENOMEM;
		in->objects = o;
		in->aobjects = n;
	}
	in->objects[in->nobjects++] = (struct new_object){ *id, *loc };
	return 0;
}

static int note_reused(struct ferry_ingest *in, uint64_t pack)
{
	if (in->nreused > 0 && in->reused[in->nreused - 1] == pack)
		return 0; /* runs of one pack are common: cheap to skip */
	if (in->nreused == in->areused) {
		size_t n = in->areused ? in->areused * 2 : 64;
		uint64_t *a = realloc(in->reused, n * sizeof(*a));
		if (!a)
			return -ENOMEM;
		in->reused = a;
		in->areused = n;
	}
	in->reused[in->nreused++] = pack;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Adds an object to the pack unless the vault or this pack has it; a
 * frame, if given, is stored instead of compressing buf again. */
static int store_frame(struct ferry_ingest *in, enum ferry_obj_type type, const struct ferry_id *id,
		       const void *buf, size_t len, const void *frame, size_t flen)
{
	struct ferry_loc loc;
	if (in->finished)
		return -EINVAL;
	if (!in->no_vault_dedup) {
		ferry_vault_lock(in->vault);
		int r = ferry_catalog_object_get(ferry_vault_catalog(in->vault), id, &loc);
		ferry_vault_unlock(in->vault);
		if (r >= 0)
			return note_reused(in, loc.pack);
		if (r != -ENOENT)
			return r;
	}
	if (ferry_pack_writer_find(in->pack, id, &loc) > 0)
		return 0;
	int r = frame ? ferry_pack_writer_add_frame(in->pack, type, id, buf, len, frame, flen,
						    &loc) :
			ferry_pack_writer_add(in->pack, type, id, buf, len, &loc);
	if (r < 0)
		return r;
	return record_object(in, id, &loc);
}

static int store_object(struct ferry_ingest *in, enum ferry_obj_type type,
			const struct ferry_id *id, const void *buf, size_t len)
{
	return store_frame(in, type, id, buf, len, NULL, 0);
}

static int node_put(void *userdata, const struct ferry_id *id, const void *buf, size_t len)
{
	struct ferry_ingest *in = userdata;
	unsigned b = bucket(id);
	for (struct node_entry *e = in->nodes[b]; e; e = e->next)
		if (ferry_id_equal(&e->id, id))
			return 0;
	struct node_entry *e = malloc(sizeof(*e) + len);
	if (!e)
		return -ENOMEM;
	e->id = *id;
	e->len = len;
	memcpy(e->data, buf, len);
	e->next = in->nodes[b];
	in->nodes[b] = e;
	return store_object(in, FERRY_OBJ_NODE, id, buf, len);
}

static int node_get(void *userdata, const struct ferry_id *id, void **ret_buf, size_t *ret_len)
{
	struct ferry_ingest *in = userdata;
	for (struct node_entry *e = in->nodes[bucket(id)]; e; e = e->next)
		if (ferry_id_equal(&e->id, id)) {
			void *copy = malloc(e->len + 1);
			if (!copy)
				return -ENOMEM;
			memcpy(copy, e->data, e->len);
			*ret_buf = copy;
			*ret_len = e->len;
			return 0;
		}
	return ferry_vault_read_object(in->vault, id, ret_buf, ret_len);
}

/* The boot of this machine, as the kernel names it: a pid means something
 * only within one boot. */
static void boot_id(char *buf, size_t size)
{
	char id[64] = "";
	_cleanup_close_ int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, id, sizeof(id) - 1) : -1;
	id[n > 0 ? n : 0] = 0;
	id[strcspn(id, "\n")] = 0;
	snprintf(buf, size, "%s", id);
}

void ferry_ingest_owner(char *buf, size_t size)
{
	char host[256] = "", boot[64];
	(void)gethostname(host, sizeof(host) - 1);
	boot_id(boot, sizeof(boot));
	snprintf(buf, size, "%s %s %ld", host, boot, (long)getpid());
}

int ferry_ingest_owner_gone(const char *owner)
{
	char host[256] = "", boot[64], ohost[256], oboot[64];
	long pid;
	if (sscanf(owner, "%255s %63s %ld", ohost, oboot, &pid) != 3 || pid <= 0)
		return 0; /* not ours to judge (an older Ferry wrote none) */
	(void)gethostname(host, sizeof(host) - 1);
	boot_id(boot, sizeof(boot));
	if (strcmp(host, ohost) != 0 || !boot[0])
		return 0; /* another machine: it may be writing */
	if (strcmp(boot, oboot) != 0)
		return 1; /* written before this boot: that process is gone */
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* Announces (add) or retracts the pack's intent in a transaction of its own. */
static int intent_set(struct ferry_ingest *in, int add)
{
	struct ferry_catalog *c = ferry_vault_catalog(in->vault);
	uint64_t pack = ferry_pack_writer_id(in->pack);
	char owner[FERRY_INGEST_OWNER_MAX];
	ferry_ingest_owner(owner, sizeof(owner));

	/* Intents matter only while their writer lives: no sync for them. */
	ferry_vault_lock(in->vault);
	int r = ferry_catalog_begin_unsynced(c);
	if (r >= 0)
		r = add ? ferry_catalog_pack_intent_add(c, pack, owner) :
			  ferry_catalog_pack_intent_delete(c, pack);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	ferry_vault_unlock(in->vault);
	if (r >= 0)
		in->announced = add;
	return r;
}

struct ferry_ingest *ferry_ingest_free(struct ferry_ingest *in)
{
	if (!in)
		return NULL;
	for (size_t b = 0; b < NODE_BUCKETS; b++)
		while (in->nodes[b]) {
			struct node_entry *e = in->nodes[b];
			in->nodes[b] = e->next;
			free(e);
		}
	/* A pack never recorded is an orphan: let GC have it at once rather
	 * than after the intent's grace. Best effort; GC gets it anyway. */
	if (in->announced && !in->committed &&
	    !ferry_catalog_in_transaction(ferry_vault_catalog(in->vault)))
		(void)intent_set(in, 0);
	ferry_pack_writer_free(in->pack);
	free(in->objects);
	free(in->reused);
	free(in->acc);
	free(in->runs);
	free(in);
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_ingest *, ferry_ingest_free)

int ferry_ingest_new(struct ferry_vault *v, struct ferry_ingest **ret)
{
	_cleanup_(ferry_ingest_freep) struct ferry_ingest *in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	uint32_t chunk_size = ferry_vault_chunk_size(v);
	in->vault = v;
	in->chunk_blocks = chunk_size / FERRY_BLOCK_SIZE;
	in->objsrc = (struct ferry_objsrc){ node_get, node_put, in };
	in->acc = malloc(chunk_size);
	in->runs = calloc(in->chunk_blocks, sizeof(*in->runs));
	if (!in->acc || !in->runs)
		return -ENOMEM;
	int r = ferry_store_pack_begin(ferry_vault_store(v), &in->pack);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(in);
	return 0;
}

void ferry_ingest_no_vault_dedup(struct ferry_ingest *in)
{
	in->no_vault_dedup = 1;
}

const struct ferry_objsrc *ferry_ingest_objsrc(struct ferry_ingest *in)
{
	return &in->objsrc;
}

/* Segment data may sit at any byte offset: load words with memcpy. */
static int is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w)
			return 0;
	}
	return 1;
}

int ferry_ingest_flush(struct ferry_ingest *in)
{
	if (in->acc_blocks == 0)
		return 0;
	size_t len = (size_t)in->acc_blocks * FERRY_BLOCK_SIZE;
	struct ferry_id id;
	ferry_sha256(in->acc, len, &id);
	int r = store_object(in, FERRY_OBJ_CHUNK, &id, in->acc, len);
	if (r < 0)
		return r;
	for (size_t i = 0; i < in->nruns; i++) {
		struct pending_run *p = &in->runs[i];
		r = ferry_map_set(p->map, p->block, p->count, &id, p->acc_block);
		if (r < 0)
			return r;
	}
	in->acc_blocks = 0;
	in->nruns = 0;
	return 0;
}

/* Pending runs must land before anything later touches the same blocks. */
static int flush_if_overlaps(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
			     uint64_t count)
{
	for (size_t i = 0; i < in->nruns; i++) {
		struct pending_run *p = &in->runs[i];
		if (p->map == m && p->block < block + count && block < p->block + p->count)
			return ferry_ingest_flush(in);
	}
	return 0;
}

static int add_small(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		     const uint8_t *data, uint32_t nblocks)
{
	while (nblocks > 0) {
		if (in->acc_blocks == in->chunk_blocks) {
			int r = ferry_ingest_flush(in);
			if (r < 0)
				return r;
		}
		uint32_t n = MIN(nblocks, in->chunk_blocks - in->acc_blocks);
		memcpy(in->acc + (size_t)in->acc_blocks * FERRY_BLOCK_SIZE, data,
		       (size_t)n * FERRY_BLOCK_SIZE);
		in->runs[in->nruns++] = (struct pending_run){ m, block, n, in->acc_blocks };
		in->acc_blocks += n;
		block += n;
		data += (size_t)n * FERRY_BLOCK_SIZE;
		nblocks -= n;
	}
	return 0;
}

/* A piece inside one chunk window: zero blocks become zero runs, the rest
 * joins the accumulator. */
static int write_partial(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
			 const uint8_t *data, uint32_t nblocks)
{
	uint32_t i = 0;
	while (i < nblocks) {
		uint32_t j = i;
		int zero = is_zero(data + (size_t)i * FERRY_BLOCK_SIZE, FERRY_BLOCK_SIZE);
		while (j < nblocks &&
		       is_zero(data + (size_t)j * FERRY_BLOCK_SIZE, FERRY_BLOCK_SIZE) == zero)
			j++;
		int r = zero ? ferry_map_set(m, block + i, j - i, NULL, 0) :
			       add_small(in, m, block + i, data + (size_t)i * FERRY_BLOCK_SIZE,
					 j - i);
		if (r < 0)
			return r;
		i = j;
	}
	return 0;
}

/* A whole aligned chunk: all zero becomes a zero run, anything else the
 * chunk (stored unless the vault has it) under id, or under its SHA-256
 * when id is NULL. */
static int put_chunk(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		     const uint8_t *data, const struct ferry_id *id, const void *frame, size_t flen)
{
	size_t len = (size_t)in->chunk_blocks * FERRY_BLOCK_SIZE;
	if (is_zero(data, len))
		return ferry_map_set(m, block, in->chunk_blocks, NULL, 0);
	struct ferry_id own;
	if (!id) {
		ferry_sha256(data, len, &own);
		id = &own;
	}
	int r = store_frame(in, FERRY_OBJ_CHUNK, id, data, len, frame, flen);
	return r < 0 ? r : ferry_map_set(m, block, in->chunk_blocks, id, 0);
}

int ferry_ingest_write_chunk(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
			     const void *data, const struct ferry_id *id, const void *frame,
			     size_t flen)
{
	if (block % in->chunk_blocks || block > ferry_map_nblocks(m) ||
	    in->chunk_blocks > ferry_map_nblocks(m) - block)
		return -EINVAL;
	int r = flush_if_overlaps(in, m, block, in->chunk_blocks);
	return r < 0 ? r : put_chunk(in, m, block, data, id, frame, flen);
}

int ferry_ingest_write(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		       const void *data, uint64_t nblocks)
{
	if (block > ferry_map_nblocks(m) || nblocks > ferry_map_nblocks(m) - block)
		return -ERANGE;
	int r = flush_if_overlaps(in, m, block, nblocks);
	if (r < 0)
		return r;

	const uint8_t *base = data;
	for (uint64_t b = block; b < block + nblocks;) {
		uint64_t window_end = (b / in->chunk_blocks + 1) * in->chunk_blocks;
		uint32_t n = (uint32_t)(MIN(window_end, block + nblocks) - b);
		const uint8_t *p = base + (b - block) * FERRY_BLOCK_SIZE;

		if (n == in->chunk_blocks)
			r = put_chunk(in, m, b, p, NULL, NULL, 0);
		else
			r = write_partial(in, m, b, p, n);
		if (r < 0)
			return r;
		b += n;
	}
	return 0;
}

int ferry_ingest_zero(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		      uint64_t nblocks)
{
	int r = flush_if_overlaps(in, m, block, nblocks);
	return r < 0 ? r : ferry_map_set(m, block, nblocks, NULL, 0);
}

int ferry_ingest_add_record(struct ferry_ingest *in, enum ferry_obj_type type, const void *buf,
			    size_t len, struct ferry_id *ret_id)
{
	if (type == FERRY_OBJ_CHUNK || type == FERRY_OBJ_NODE)
		return -EINVAL;
	struct ferry_id id;
	ferry_sha256(buf, len, &id);
	int r = store_object(in, type, &id, buf, len);
	if (r >= 0)
		*ret_id = id;
	return r;
}

int ferry_ingest_add_object(struct ferry_ingest *in, enum ferry_obj_type type,
			    const struct ferry_id *id, const void *buf, size_t len)
{
	return store_object(in, type, id, buf, len);
}

/* Step 1 of a commit: the pack durable, announced first so that GC, which
 * lists the store without a lock, never takes it for an orphan. */
static int seal(struct ferry_ingest *in)
{
	int r = ferry_ingest_flush(in);
	if (r < 0 || in->finished)
		return r;
	if (ferry_pack_writer_count(in->pack) > 0 && !in->announced) {
		r = intent_set(in, 1);
		if (r < 0)
			return r;
	}
	r = ferry_pack_writer_finish(in->pack);
	if (r >= 0)
		in->finished = 1;
	return r;
}

/* Step 2, inside the transaction: the pack, its objects, the generation
 * stamped on packs whose objects were reused, the caller's rows. */
static int record(struct ferry_ingest *in, ferry_ingest_rows_t rows, void *userdata)
{
	struct ferry_catalog *c = ferry_vault_catalog(in->vault);
	uint64_t gen;
	int r = ferry_catalog_gen_next(c, &gen);
	if (r >= 0 && ferry_pack_writer_count(in->pack) > 0)
		r = ferry_catalog_pack_add(c, ferry_pack_writer_id(in->pack),
					   ferry_pack_writer_bytes(in->pack),
					   ferry_pack_writer_count(in->pack), gen);
	/* Without vault dedup a copy may repeat an object of an older pack,
	 * which GC may be about to drop: the index follows the new copy. */
	for (size_t i = 0; r >= 0 && i < in->nobjects; i++)
		r = in->no_vault_dedup ?
			    ferry_catalog_object_move(c, &in->objects[i].id, &in->objects[i].loc) :
			    ferry_catalog_object_put(c, &in->objects[i].id, &in->objects[i].loc);
	/* A pack row goes only with all its object rows (GC's drop or
	 * rewrite), so a pack still there still holds what was reused. */
	if (in->nreused > 1)
		qsort(in->reused, in->nreused, sizeof(*in->reused), cmp_u64);
	for (size_t i = 0; r >= 0 && i < in->nreused; i++) {
		if (i > 0 && in->reused[i] == in->reused[i - 1])
			continue;
		r = ferry_catalog_pack_touch(c, in->reused[i], gen);
		if (r == -ENOENT)
			r = -ESTALE; /* collected since it was looked up */
	}
	if (r >= 0 && rows)
		r = rows(c, userdata);
	if (r >= 0 && in->announced)
		r = ferry_catalog_pack_intent_delete(c, ferry_pack_writer_id(in->pack));
	return r;
}

int ferry_ingest_commit(struct ferry_ingest *in, ferry_ingest_rows_t rows, void *userdata)
{
	struct ferry_catalog *c = ferry_vault_catalog(in->vault);
	if (in->committed)
		return -EINVAL;
	if (ferry_catalog_in_transaction(c))
		return -EINVAL; /* the commit is one transaction of its own */
	int r = seal(in);
	if (r < 0)
		return r;

	ferry_vault_lock(in->vault);
	r = ferry_catalog_begin(c);
	if (r >= 0) {
		r = record(in, rows, userdata);
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	ferry_vault_unlock(in->vault);
	if (r >= 0) {
		in->committed = 1;
		in->announced = 0;
	}
	return r;
}

uint64_t ferry_ingest_stored_bytes(const struct ferry_ingest *in)
{
	return ferry_pack_writer_bytes(in->pack);
}
