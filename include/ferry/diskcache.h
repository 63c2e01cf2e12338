/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bounded on-disk cache of stored objects, for readers of a store that
 * lives on object storage (ferryfs): a hit costs a local file read instead
 * of a ranged GET over the network, and the cache survives remounts. It
 * keeps each object's stored entry exactly as the pack holds it (entry
 * header and payload, docs/format/pack.md), one file per object id, so a
 * hit is verified by the same checks as a pack read; this module checks
 * only sizes and leaves content checks to its caller, who drops an entry
 * that fails them. Layout: docs/format/diskcache.md.
 *
 * The size limit is kept by evicting the least recently used entries. The
 * index lives in memory and is rebuilt from the directory on open (last
 * use survives as the files' mtime). Writes are atomic (temp file and
 * rename) but not synced: a cache may lose entries in a crash, and a torn or
 * damaged file is only ever a miss. One process uses a directory at a time
 * (an flock on DIR/lock); every function is thread-safe.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

struct ferry_diskcache;

struct ferry_diskcache_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t puts;      /* entries written */
	uint64_t evictions; /* entries removed to stay under the limit */
	uint64_t dropped;   /* entries removed as damaged (ferry_diskcache_drop, bad size) */
	uint64_t entries;   /* now held */
	uint64_t bytes;     /* now held, each file counted in whole 4 KiB blocks */
	uint64_t max_bytes;
};

/*
 * Opens (creating it, mode 0700, if need be) the cache directory dir,
 * holding at most max_bytes (> 0). Scans it to rebuild the index, removes
 * temp files a crash left behind, and evicts down to max_bytes if the limit
 * shrank. -EBUSY while another process holds the directory.
 */
int ferry_diskcache_open(const char *dir, uint64_t max_bytes, struct ferry_diskcache **ret);
struct ferry_diskcache *ferry_diskcache_free(struct ferry_diskcache *dc);
/*
 * Reads the entry of id, which must be exactly len bytes, into buf.
 * -ENOENT on a miss (absent, or held with another size, which is dropped).
 */
int ferry_diskcache_get(struct ferry_diskcache *dc, const struct ferry_id *id, void *buf,
			size_t len);
/*
 * Stores len bytes as the entry of id, replacing any other, and evicts the
 * least recently used entries until the cache is under its limit again.
 * -EFBIG for an entry larger than a quarter of the limit (it would flush
 * too much). The caller must have verified buf.
 */
int ferry_diskcache_put(struct ferry_diskcache *dc, const struct ferry_id *id, const void *buf,
			size_t len);
/* Removes the entry of id (one that failed its caller's checks). Absent is fine. */
int ferry_diskcache_drop(struct ferry_diskcache *dc, const struct ferry_id *id);
void ferry_diskcache_get_stats(struct ferry_diskcache *dc, struct ferry_diskcache_stats *ret);
