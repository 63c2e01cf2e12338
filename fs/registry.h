/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry of open clones. All open files of one clone disk share one
 * struct clone (clone.h), so every open sees the same overlay: the first
 * open creates it from the clone disk's row in the catalog, and it leaves
 * the registry when its last user goes and nothing is left to flush, so the
 * next open starts from the catalog again. A background thread (started by
 * registry_start()) wakes every second to notice failovers that left the
 * catalog, whose clones it discards, and flushes dirty clones every five
 * seconds; registry_stop() flushes what is left at unmount. The registry
 * remembers when clones that left it were last flushed: their files' mtime.
 *
 * Thread-safe. Its lock is taken before the vault lock, never inside it;
 * flushes run outside it.
 */
#pragma once

#include <stdint.h>

#include "clone.h"
#include "fs.h"
#include "snapshot.h"

struct registry;

/*
 * A new, empty registry for the mount fs. It reads fs's vault handles, chunk
 * cache and snapshot slot when it uses them, as main.c reopens them when
 * the daemon detaches. -ENOMEM.
 */
int registry_new(struct fs *fs, struct registry **ret);

/* Frees the registry and every clone in it, dropping unflushed blocks:
 * registry_stop() first. Returns NULL; NULL is fine. */
struct registry *registry_free(struct registry *reg);

/* Starts the background thread (a no-op if it runs). Only after the daemon
 * has forked: threads do not survive that. -errno if it cannot start. */
int registry_start(struct registry *reg);

/* Stops the background thread if it runs and flushes every dirty clone;
 * failures are logged. Clones stay open. May be called again; NULL is fine. */
void registry_stop(struct registry *reg);

/*
 * The shared clone of clone disk d of failover fo of VM v, with a user for
 * the caller (registry_close() drops it). A clone not open yet is opened
 * from the clone disk's row in the catalog, not from the caller's snapshot:
 * that may predate the flush of a clone that was just closed. -ENOENT if
 * the catalog no longer has the disk, -errno of clone_new().
 */
int registry_open(struct registry *reg, const struct snap_vm *v, const struct snap_failover *fo,
		  const struct ferry_clone_disk *d, struct clone **ret);

/* Drops a user of c. The last one takes a clean clone out of the registry
 * and frees it; a dirty one stays for the background thread. */
void registry_close(struct registry *reg, struct clone *c);

/* When the clone of (failover, disk index) was last flushed in this
 * process, in ns; 0 if never. */
int64_t registry_mtime(struct registry *reg, int64_t failover_id, uint16_t idx);

/* Flushes every open clone of a failover (fsync of its directory): 0, or
 * the first clone_flush() error after trying them all. */
int registry_flush_failover(struct registry *reg, int64_t failover_id);
