/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The two helper threads of a replication pass (replicate.c). The
 * prefetcher reads the segments to apply from the cache, in order, and
 * prepares each (apply_prepare: verify, unpack, hash) while the one before
 * it is applied. The acker acknowledges applied segments and then deletes
 * them from the cache, as cache.md orders it; when the apply runs ahead,
 * one ack covers every segment applied since the last. Each has its own
 * cache handle: handles are not shared between threads.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "apply.h"
#include "ferry/cache.h"
#include "ferry/vault.h"

/* One segment read and prepared ahead, or why it could not be. */
struct fetched {
	int r;
	int read_failed; /* r is from reading the cache, not from the segment */
	char msg[512];
	struct prepared_segment *p; /* the caller frees it */
};

/* Reads segment seq of vm from cache and prepares it, on the calling
 * thread: what the prefetcher does ahead, and the in-line fallback. */
struct fetched fetch_segment(struct ferry_vault *v, struct ferry_cache *cache, const char *vm,
			     uint64_t seq);

struct prefetcher;

/* Starts fetching seqs[0..n) of vm from the cache at cache_url (the array
 * must outlive the prefetcher). */
int prefetcher_start(struct ferry_vault *v, const char *cache_url, const char *vm,
		     const uint64_t *seqs, size_t n, struct prefetcher **ret);
/* The next segment, in order; after one whose r < 0 there is no next. */
struct fetched prefetcher_take(struct prefetcher *f);
/* Stops, waits for the thread and frees what was not taken. NULL is fine. */
void prefetcher_stop(struct prefetcher *f);

struct acker;

int acker_start(const char *cache_url, const char *vm, struct acker **ret);
/* Queues segment seq, applied; ack is the catalog's applied state after
 * it. Returns the acker's first failure, if any. */
int acker_push(struct acker *a, const struct ferry_ack *ack, uint64_t seq);
/* Waits until everything queued is acknowledged and deleted, frees the
 * acker and returns its first failure, if any. */
int acker_finish(struct acker *a);
