/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writable copy-on-write clones of recovery-point disks, for ferryfs's
 * failovers. A clone is a committed disk map (the clone disk's root in the
 * catalog) plus an in-memory overlay of dirty 4 KiB blocks shared by every
 * open file of that disk. A flush turns the overlay into chunks and map
 * nodes in one pack (ferry/ingest.h), commits a new root next to the
 * point's untouched base root, and only then forgets the flushed blocks.
 * Thread-safe: reads run in parallel; writes and flushes of one clone are
 * serialised against each other, never against other clones.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/catalog.h"
#include "ferry/image.h"
#include "ferry/vault.h"

/* An overlay this large is flushed within the write that grew it. */
#define CLONE_FLUSH_THRESHOLD (64u << 20)

struct clone;

/*
 * Opens clone disk d. Reads go through cc (the reader's vault); writes are
 * flushed through wv, a vault handle opened read-write and used by flushes
 * only (NULL: the clone is read-only and writes fail with -EROFS). label
 * names the clone in log messages ("vm/failover/disk").
 */
int clone_new(struct ferry_chunk_cache *cc, struct ferry_vault *wv,
	      const struct ferry_clone_disk *d, const char *label, struct clone **ret);
/* Drops unflushed blocks: flush first. */
struct clone *clone_free(struct clone *c);

int64_t clone_failover_id(const struct clone *c);
uint16_t clone_idx(const struct clone *c);
/* Bytes waiting in the overlay. */
uint64_t clone_dirty_bytes(struct clone *c);
/* Time of the last successful flush, 0 if none in this process. */
int64_t clone_mtime(struct clone *c);

/* As ferry_image_read: the overlay first, then the committed map. */
ssize_t clone_read(struct clone *c, void *buf, size_t len, uint64_t off);
/* Writes up to the end of the disk and returns the count; -EFBIG at or
 * past the end. May flush synchronously when the overlay grows large. */
ssize_t clone_write(struct clone *c, const void *buf, size_t len, uint64_t off);
/* SEEK_DATA / SEEK_HOLE over overlay and map, as ferry_image_seek. */
int clone_seek(struct clone *c, uint64_t off, int whence, uint64_t *ret);
/* Makes every block written before the call durable in the vault. */
int clone_flush(struct clone *c);
/* The failover went away under open files: forget the overlay and fail
 * further reads and writes with err. */
void clone_discard(struct clone *c, int err);
