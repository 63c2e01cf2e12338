/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A disk's block fingerprints as the `qemu` tracker shipped them: one
 * XXH3-128 per 4 KiB block (the all-zero fingerprint for a zero block, as
 * the scan tracker), in a file of the agent's state directory. The tracker
 * writes a block's fingerprint only after the segment that carries the
 * block is in the cache, so the file never claims more than the chain
 * holds; a lost write costs a block shipped twice, never a block skipped.
 * When qemu loses its dirty bitmap, a full cycle compares what it reads
 * with the file and ships only what differs. The file is usable for that
 * once it has a baseline: a full cycle (every block) completed into it.
 * Format: docs/format/agent-state.md ("qemu tracker fingerprints").
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/crypto.h"

struct fpfile;

/* Opens (or creates, mode 0600) the file at path for a disk of size
 * bytes. A file that is damaged, of another format or for another size is
 * started over, without a baseline. */
int fpfile_open(const char *path, uint64_t size, struct fpfile **ret);
struct fpfile *fpfile_free(struct fpfile *f);

/* Whether the file has a baseline (above). */
int fpfile_has_baseline(const struct fpfile *f);
/* Records the baseline: call when a full cycle's marker is in the cache.
 * Syncs the file first. Clears a due full compare (below). */
int fpfile_set_baseline(struct fpfile *f);
/* Whether a full compare is due: the file holds fingerprints the target
 * published (a resync), which the next cycle compares every block with. */
int fpfile_full_due(const struct fpfile *f);
/*
 * A resync: replaces the file at path (atomically, durably) with one for
 * a disk of size bytes whose entries are those of src from src_off on
 * (16 bytes per block, as FERRY-FP files hold them: the vault's image),
 * with a baseline and a full compare due.
 */
int fpfile_install(const char *path, uint64_t size, int src, off_t src_off);

/* The fingerprint of one 4 KiB block (all zero for a zero block). */
void fpfile_block(const void *data, struct ferry_fp *ret);
/* Fingerprints of blocks [block, block + n), read. */
int fpfile_get(struct fpfile *f, uint64_t block, uint32_t n, struct ferry_fp *ret);
/* Stores fingerprints of blocks [block, block + n). */
int fpfile_put(struct fpfile *f, uint64_t block, uint32_t n, const struct ferry_fp *fps);
/* Blocks [block, block + n) read as zeros. */
int fpfile_zero(struct fpfile *f, uint64_t block, uint64_t n);
