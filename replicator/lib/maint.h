/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Vault maintenance shared by ferry-replicator and the ferry CLI: the
 * exclusive writer lock, thinning of old recovery points by policy, and
 * garbage collection of objects that no root (maint_roots: live and work
 * maps, points, failover clones, records) references.
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
/* maint_lock of "writer", waited for up to timeout_s: a replicator holds
 * it only during a pass, ferry gc for its run. Logs once that it waits.
 * -EBUSY when the time ran out. */
int maint_writer_lock_wait(const char *vault_dir, unsigned timeout_s, int *ret_fd);

/* Every VM of the vault, in name order, in a new array (caller frees). */
int maint_list_vms(struct ferry_vault *v, struct ferry_vm **ret, size_t *ret_n);

/*
 * Thins recovery points of every VM as of now_ns: points older than the
 * retention window go; within it, all of the last two hours stay, older
 * ones keep the newest point of each hour. A VM's ordinary points are one
 * series, and its newest point always stays. The points of a consistency
 * group's rounds are thinned as one series per group, a round at a time:
 * kept or removed on every member together (the longest retention of the
 * members; a round holding some member's newest point stays).
 */
int maint_thin(struct ferry_vault *v, int64_t now_ns, unsigned *ret_deleted);

/*
 * Every root that keeps data in the vault alive, read from the catalog:
 * the vault's record; per VM its records, the live and applied roots of
 * its disks, each recovery point's record and disks, and each failover's
 * clone disks (their roots and the points they were cloned from).
 * Re-protect seeds are VMs of the vault they were seeded into, so their
 * roots come with the VMs. what names the root for messages. GC marks
 * from these, ferry check verifies them: one list for both. record may be
 * NULL.
 */
struct maint_roots_ops {
	int (*root)(const char *what, const struct ferry_id *root, uint64_t size, void *userdata);
	int (*record)(const char *what, const struct ferry_id *id, void *userdata);
};
int maint_roots(struct ferry_vault *v, const struct maint_roots_ops *ops, void *userdata);

struct gc_result {
	uint64_t live_objects;
	uint64_t packs_deleted;
	uint64_t packs_rewritten;
	uint64_t packs_skipped; /* changed since the snapshot: next run */
	uint64_t orphan_packs;
	uint64_t bytes_freed;
};

/*
 * Marks from every root, deletes packs with no live object, rewrites packs
 * that are mostly dead, removes packs nobody recorded or announced (left
 * by a crash). Needs the writer lock (no other applier or GC), but not
 * ferryfs's absence: marking and listing happen in one snapshot, and a
 * pack created or reused after it is never dropped or rewritten
 * (docs/architecture.md, "Ingest and GC").
 */
int maint_gc(struct ferry_vault *v, struct gc_result *ret);

/* Tests only: called between GC's snapshot and its sweep. */
extern int (*gc_after_snapshot_hook)(struct ferry_vault *v);
