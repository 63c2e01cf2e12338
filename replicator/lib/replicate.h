/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A replication pass over one VM (see replicate.c). The caller holds the
 * vault's writer lock.
 */
#pragma once

#include <signal.h>
#include <stdint.h>

#include "ferry/vault.h"

/* Applies the waiting segments of vm. Returns how many were applied, or
 * -errno at the first segment that cannot be (it stays in the cache and the
 * VM is marked in error). Stops early once *stop is set (stop may be NULL). */
int replicate_vm(struct ferry_vault *v, const struct ferry_vm *vm,
		 const volatile sig_atomic_t *stop);

/* What passes did, summed over them (ferry-replicator's metrics). */
struct replicate_stats {
	uint64_t applied_bytes;    /* DATA bytes of the segments applied */
	uint64_t applied_segments; /* segments applied (not those applied before) */
	/* Passes that ended at an error, by where: the cache (opening,
	 * listing, reading a segment, acknowledging), a refused segment, or
	 * anything else. */
	uint64_t cache_errors, refused, other_errors;
};
/* As replicate_vm, adding to *stats what the pass did. */
int replicate_vm_counted(struct ferry_vault *v, const struct ferry_vm *vm,
			 const volatile sig_atomic_t *stop, struct replicate_stats *stats);
