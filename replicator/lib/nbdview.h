/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reading side of the qemu change tracker: one NBD connection to a disk
 * view that qemu exports (a fleecing view, with the cycle's frozen dirty
 * bitmap attached), a walk over it that classifies every 4 KiB block as
 * skip, data or zero from the negotiated metadata contexts, and reads of
 * the data. The server is not trusted: a block-status reply that breaks the
 * NBD protocol fails the walk with -EPROTO rather than steering what is
 * shipped. Foreign types (libnbd's handle) stay inside nbdview.c.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct nbdview;

enum nbdview_kind {
	/* Nothing to ship: not dirty (with a bitmap), or reads as zeros
	 * (without one, see nbdview_extents). */
	NBDVIEW_SKIP,
	/* Must be read (nbdview_read) and shipped. */
	NBDVIEW_DATA,
	/* Dirty and reads as zeros in whole: ship a ZERO record, read nothing.
	 * Only ever reported with a bitmap. */
	NBDVIEW_ZERO,
};

/* Connects to qemu's NBD server on the unix socket path and opens the
 * export named export_name. bitmap names the dirty bitmap exported with it
 * (meta context "qemu:dirty-bitmap:<bitmap>"), or is NULL to read
 * allocation only ("base:allocation"), as the first, full cycle does.
 * Returns -ENOENT when the socket, the export or the bitmap's context is
 * not there, -ECONNREFUSED when nobody listens, -EPROTO when the server
 * breaks the protocol, other -errno from the connection. On failure no
 * handle exists: nbdview_last_error(NULL) then tells why, in this thread. */
int nbdview_open(const char *path, const char *export_name, const char *bitmap,
		 struct nbdview **ret);
/* Disconnects cleanly; accepts NULL; returns NULL. */
struct nbdview *nbdview_free(struct nbdview *v);
/* The export's size in bytes, as the server announced it (need not be a
 * multiple of 4 KiB). */
uint64_t nbdview_size(const struct nbdview *v);

/* Limits each block-status request to bytes (1 to 2^32 - 1, the most the
 * protocol's 32-bit length can ask), for servers with smaller limits, and
 * for tests: a limit that is no multiple of 4 KiB makes requests end inside
 * blocks. -EINVAL outside that range. The default, 4 GiB - 4 KiB, is the
 * largest multiple of 4 KiB in it: every request costs a round trip to the
 * server, and the clean, unallocated stretches of a large sparse disk then
 * cost one per 4 GiB, not one per GiB. */
int nbdview_set_max_request(struct nbdview *v, uint64_t bytes);

/* Walks [offset, offset+len) in order and calls cb with maximal runs of one
 * kind, at 4 KiB granularity: offset must be a multiple of 4096, and
 * offset+len a multiple of 4096 or the export size (the last block may be
 * partial: the last run then ends at the size); -EINVAL otherwise. len 0
 * walks nothing.
 *
 * A block is dirty when the bitmap marks any byte of it dirty, and reads as
 * zeros when base:allocation sets NBD_STATE_ZERO on all of its bytes
 * (HOLE alone says nothing about the contents and counts as data), so a
 * server reporting at a finer or coarser granularity, or unaligned, only
 * ever makes the walk ship more, never less.
 *
 * With a bitmap: clean blocks are SKIP, dirty blocks that read as zeros
 * ZERO, other dirty blocks DATA. Without a bitmap (the first cycle): blocks
 * that read as zeros are SKIP, all others DATA; there is no ZERO, because
 * the first cycle writes to a target that starts out zero. A caller whose
 * target may hold anything must ship the SKIP runs of that mode as ZERO.
 * A server without base:allocation makes every block (dirty) DATA.
 *
 * Block status is asked for both contexts in one request, in requests of
 * at most the limit above, as often as the server's shorter answers need.
 * Extents that run past the request are cut at it; an empty reply, a
 * zero-length extent, a context answered twice or not at all, or an extent
 * past the end of the export fails with -EPROTO (nbdview_last_error says
 * which). A cb returning < 0 stops the walk; nbdview_extents then returns
 * that value. Otherwise returns 0 once every run has been reported. */
int nbdview_extents(struct nbdview *v, uint64_t offset, uint64_t len,
		    int (*cb)(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata),
		    void *userdata);

/* Reads len bytes at off into buf, all or nothing; the range must lie in
 * the export (-EINVAL otherwise). Any len works (large ones are split at
 * the server's maximum request size), but the caller should bound it, e.g.
 * 1 to 4 MiB per call. -EIO etc. from the server. */
int nbdview_read(struct nbdview *v, void *buf, size_t len, uint64_t off);

/* A message for the last failure on v (naming the export and, from libnbd,
 * the server's reason), or "" if none. With v NULL: the reason the last
 * nbdview_open of the calling thread failed. Valid until the next call on
 * v (or, for NULL, the next nbdview_open in this thread). */
const char *nbdview_last_error(const struct nbdview *v);
