/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache: segments in flight between agent and replicator, and the
 * acknowledgements that travel back, on a blobs location. The agent only
 * ever makes outbound calls: it puts segments and reads acks; the replicator
 * reads and deletes segments and puts acks.
 *
 * Names: segments/<vm>/<seq, 16 hex digits>.seg (created exclusively,
 * immutable) and acks/<vm>.ack (replaced whole). Format: docs/format/cache.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

struct ferry_cache;

struct ferry_ack {
	uint64_t seq;           /* last applied segment; 0 = none */
	struct ferry_id digest; /* its digest */
};

int ferry_cache_open(const char *url, int create, struct ferry_cache **ret);
struct ferry_cache *ferry_cache_free(struct ferry_cache *c);
const char *ferry_cache_url(const struct ferry_cache *c);

/* -EEXIST if a segment with that seq is already there. */
int ferry_cache_put_segment(struct ferry_cache *c, const char *vm, uint64_t seq, const void *buf,
			    size_t len);
int ferry_cache_get_segment(struct ferry_cache *c, const char *vm, uint64_t seq, void **ret_buf,
			    size_t *ret_len);
int ferry_cache_delete_segment(struct ferry_cache *c, const char *vm, uint64_t seq);
/* Segments waiting for vm, ascending seq; *ret_bytes sums their sizes.
 * Names that are not well-formed segment names are ignored. The caller
 * frees *ret_seqs. */
int ferry_cache_list_segments(struct ferry_cache *c, const char *vm, uint64_t **ret_seqs,
			      size_t *ret_n, uint64_t *ret_bytes);
int ferry_cache_put_ack(struct ferry_cache *c, const char *vm, const struct ferry_ack *ack);
/* A missing ack is seq 0 (nothing applied yet), not an error;
 * -EBADMSG if the ack is damaged. */
int ferry_cache_get_ack(struct ferry_cache *c, const char *vm, struct ferry_ack *ret);
