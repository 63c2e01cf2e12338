/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Parallel unpacking of DATAZ records (see unpack.h). The plain bytes of
 * all records share one buffer, each record at an offset fixed before the
 * threads start; threads take records from a shared counter, so they never
 * touch the same slot and need no lock.
 */
#include "unpack.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"

#define MAX_THREADS 8

struct unpack {
	const struct ferry_segment *seg;
	uint32_t chunk_size;
	uint32_t *todo; /* record numbers of the DATAZ records */
	uint32_t ntodo;
	struct unpacked *out; /* by record number */
	size_t *at;           /* by record number: offset of its bytes in buf */
	uint8_t *buf;
	atomic_uint next;
};

struct unpack *unpack_free(struct unpack *u)
{
	if (u) {
		free(u->todo);
		free(u->out);
		free(u->at);
		free(u->buf);
		free(u);
	}
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct unpack *, unpack_free)

static void *worker(void *arg)
{
	struct unpack *u = arg;
	for (;;) {
		unsigned k = atomic_fetch_add(&u->next, 1);
		if (k >= u->ntodo)
			break;
		uint32_t i = u->todo[k];
		struct ferry_record rec;
		struct unpacked *o = &u->out[i];
		uint8_t *dst = u->buf + u->at[i];
		if (ferry_segment_record(u->seg, i, &rec) < 0 ||
		    ferry_record_unpack(&rec, dst) < 0) {
			o->error = -EBADMSG;
			continue;
		}
		o->data = dst;
		if (rec.length == u->chunk_size && rec.offset % u->chunk_size == 0) {
			ferry_sha256(dst, rec.length, &o->id);
			o->whole_chunk = 1;
		}
	}
	return NULL;
}

int unpack_segment(const struct ferry_segment *seg, uint32_t chunk_size, unsigned workers,
		   struct unpack **ret)
{
	uint32_t n = ferry_segment_info(seg)->nrecords;
	_cleanup_(unpack_freep) struct unpack *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->seg = seg;
	u->chunk_size = chunk_size;
	u->todo = malloc(MAX(n, 1u) * sizeof(*u->todo));
	u->out = calloc(MAX(n, 1u), sizeof(*u->out));
	u->at = calloc(MAX(n, 1u), sizeof(*u->at));
	if (!u->todo || !u->out || !u->at)
		return -ENOMEM;

	/* The parser bounds what DATAZ records unpack to in all. */
	size_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct ferry_record rec;
		if (ferry_segment_record(seg, i, &rec) < 0 || rec.type != FERRY_REC_DATAZ)
			continue;
		u->todo[u->ntodo++] = i;
		u->at[i] = total;
		total += rec.length;
	}
	if (u->ntodo == 0) {
		*ret = TAKE_PTR(u);
		return 0;
	}
	u->buf = malloc(total);
	if (!u->buf)
		return -ENOMEM;

	atomic_init(&u->next, 0);
	ferry_run_parallel(worker, u, MIN(MAX(workers, 1u), MIN((unsigned)MAX_THREADS, u->ntodo)));
	*ret = TAKE_PTR(u);
	return 0;
}

const struct unpacked *unpack_get(const struct unpack *u, uint32_t i)
{
	if (!u || i >= ferry_segment_info(u->seg)->nrecords || !u->at || !u->out)
		return NULL;
	const struct unpacked *o = &u->out[i];
	return o->data || o->error ? o : NULL;
}
