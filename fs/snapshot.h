/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The catalog snapshot: an in-memory copy of the vault's VMs (with their
 * disks, target resources and rendered vm.conf), recovery points (with
 * their disks) and failovers (with their clone disks), read at one catalog
 * generation. Request handlers take a reference to the newest one with
 * snap_get(), which rebuilds it first when the generation (PRAGMA
 * data_version + local commits) has moved, so the view follows the
 * replicator without a remount and each request sees one consistent view.
 * A snapshot never changes once built and lives while anyone holds it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/catalog.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "ferry/vmdef.h"

/* Inode numbers keep 40 bits of a catalog id (ns.h): objects with larger
 * ids are left out of snapshots, so they are not shown. */
#define SNAP_ID_BITS 40
#define SNAP_ID_MAX ((INT64_C(1) << SNAP_ID_BITS) - 1)

struct snap_point {
	struct ferry_point p;
	struct ferry_point_disk *disks;
	size_t ndisks;
};

struct snap_failover {
	struct ferry_failover f;
	struct ferry_clone_disk *disks;
	size_t ndisks;
};

struct snap_vm {
	struct ferry_vm vm;
	/* Target resources and description, in catalog order; the snapshot
	 * owns the strings. */
	struct ferry_vmdef_resource *res;
	size_t nres;
	struct ferry_disk *disks;
	size_t ndisks;
	struct snap_point *points; /* oldest first */
	size_t npoints;
	struct snap_point *latest, *latest_app; /* NULL when there is none */
	struct snap_failover *failovers;        /* id order */
	size_t nfailovers;
	char *conf; /* the text of vm.conf (ferry_vmdef_conf()) */
	size_t conflen;
};

struct snap_pindex;
struct snap_findex;

struct snap {
	unsigned refs;       /* guarded by snapshot.c's lock */
	uint64_t gen;        /* the catalog generation it was read at */
	struct snap_vm *vms; /* name order */
	size_t nvms;
	/* Private: sorted by point and failover id, to resolve inodes. */
	struct snap_pindex *pidx;
	size_t npidx;
	struct snap_findex *fidx;
	size_t nfidx;
};

/*
 * The newest snapshot of vault, with a reference for the caller (drop it
 * with snap_unref()). *current is the mount's slot for the newest one and
 * holds a reference itself: NULL at first, then built here, and rebuilt
 * when the catalog generation moved since it was read. A catalog that
 * cannot be read right now (a writer's checkpoint, a busy database) leaves
 * the previous snapshot in place rather than failing; with none to fall
 * back on, its error is returned (-EIO if it had none). Takes the vault
 * lock, and this module's lock inside it, never the other way round.
 */
int snap_get(struct ferry_vault *vault, struct snap **current, struct snap **ret);

/* Drops a reference; the last one frees the snapshot. NULL is fine. */
void snap_unref(struct snap *s);

static inline void snap_unrefp(struct snap **s)
{
	snap_unref(*s);
}
#define _cleanup_snap_ _cleanup_(snap_unrefp)

/* Drops the slot's reference and empties it (before its vault closes). */
void snap_clear(struct snap **current);

/*
 * The recovery point with catalog id id, or the failover with catalog id
 * id (both unique across VMs), and with vm non-NULL its VM; NULL (and *vm
 * untouched) when s is NULL or has no such id.
 */
struct snap_point *snap_point_by_id(const struct snap *s, int64_t id, struct snap_vm **vm);
struct snap_failover *snap_failover_by_id(const struct snap *s, int64_t id, struct snap_vm **vm);
