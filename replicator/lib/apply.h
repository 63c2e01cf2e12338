/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applying one change-log segment to a vault: the heart of the replicator.
 * Verifies the segment and its place in the VM's chain, turns its records
 * into chunks and map updates, writes one pack, and commits everything
 * (objects, maps, points, applied sequence) in one catalog transaction, so a
 * crash at any instant leaves either all of the segment or none of it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/vault.h"

struct apply_result {
	uint64_t seq;
	uint64_t data_bytes;   /* bytes of DATA records */
	uint64_t stored_bytes; /* bytes of the pack written */
	unsigned markers;
	unsigned points;     /* recovery points cut */
	int already_applied; /* seq was applied before: nothing done */
};

/*
 * Applies segment buf (len bytes), found in the cache as sequence number seq,
 * to VM vm_name. Returns -EBADMSG for a damaged segment; -ESTALE for one out
 * of sequence, holding another seq than its name, or not chained to the
 * last applied one; -EINVAL for one that does not fit the VM (unknown disk,
 * size change); -EAGAIN when the VM changed under the apply (another writer
 * committed first) or the catalog stayed locked: nothing is wrong with the
 * segment, apply it again later. msg then holds an explanation. On any error
 * nothing was applied.
 */
int apply_segment(struct ferry_vault *v, const char *vm_name, uint64_t seq, const void *buf,
		  size_t len, struct apply_result *ret, char *msg, size_t msgsize);

/*
 * apply_segment in two steps, so that a replicator can prepare the next
 * segment while it applies one: apply_prepare parses and verifies the
 * segment and unpacks its compressed data without touching the catalog
 * (safe on another thread than the one applying), and apply_prepared
 * applies a prepared segment. Errors and msg as for apply_segment.
 */
struct prepared_segment;
int apply_prepare(struct ferry_vault *v, const void *buf, size_t len, struct prepared_segment **ret,
		  char *msg, size_t msgsize);
int apply_prepared(struct ferry_vault *v, const char *vm_name, uint64_t seq,
		   const struct prepared_segment *p, struct apply_result *ret, char *msg,
		   size_t msgsize);
struct prepared_segment *apply_prepared_free(struct prepared_segment *p);
