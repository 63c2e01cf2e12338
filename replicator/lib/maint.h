/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Vault maintenance shared by ferry-replicator and the ferry CLI: the
 * exclusive writer lock, thinning of old recovery points by policy, and
 * garbage collection of objects no point, live map or work map references.
 */
#pragma once

#include <stdint.h>

#include "ferry/vault.h"

/*
 * Takes one of the vault's locks (DIR/NAME.lock, flock); -EBUSY if another
 * process holds it; it lives as long as the returned fd. "replicator" is
 * held by the one replicator for its lifetime; "writer" by whoever changes
 * the vault's data: the replicator during a pass, ferry gc, ferry failover.
 */
int maint_lock(const char *vault_dir, const char *name, int *ret_fd);

/* Every VM of the vault, in name order, in a new array (caller frees). */
int maint_list_vms(struct ferry_vault *v, struct ferry_vm **ret, size_t *ret_n);

/*
 * Thins recovery points of every VM as of now_ns: points older than the
 * retention window go; within it, all of the last two hours stay, older
 * ones keep the newest point of each hour. The newest point always stays.
 */
int maint_thin(struct ferry_vault *v, int64_t now_ns, unsigned *ret_deleted);

struct gc_result {
	uint64_t live_objects;
	uint64_t packs_deleted;
	uint64_t packs_rewritten;
	uint64_t orphan_packs;
	uint64_t bytes_freed;
};

/* Marks from every root, deletes packs with no live object, rewrites packs
 * that are mostly dead, removes packs the catalog does not know (left by a
 * crash). Needs the writer lock. */
int maint_gc(struct ferry_vault *v, struct gc_result *ret);
