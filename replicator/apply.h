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
 * to VM vm_name. Returns -EBADMSG for a damaged segment,
 * -ESTALE for one out of sequence, holding another seq than its name, or not chained to the last applied one,
 * -EINVAL for one that does not fit the VM (unknown disk, size change);
 * msg then holds an explanation. On any error nothing was applied.
 */
int apply_segment(struct ferry_vault *v, const char *vm_name, uint64_t seq, const void *buf,
		  size_t len, struct apply_result *ret, char *msg, size_t msgsize);
