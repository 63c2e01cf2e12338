/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One ferryfs mount: the state every module of the daemon shares. main.c
 * fills it in, opens its vault handles (again after the daemon detaches:
 * SQLite connections must not cross a fork) and frees it at exit; the
 * request handlers (ops.c) reach it through fuse_req_userdata(). Fields
 * that are written after the session starts say what guards them.
 */
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/diskcache.h"
#include "ferry/image.h"
#include "ferry/vault.h"

struct snap;
struct registry;

struct fs {
	struct ferry_vault *vault; /* readers: shared by every thread */
	/* A second handle on the same vault, opened read-write, for clone
	 * flushes only: their catalog transactions never make a reader wait
	 * on SQLite's busy handler while holding the readers' lock. NULL when
	 * the vault cannot be written: clones are read-only then. */
	struct ferry_vault *wvault;
	struct ferry_chunk_cache *cache;
	/* Objects fetched from a remote store, kept on local disk; NULL when
	 * off. Opened once before the daemon detaches (its lock and fds
	 * survive the fork) and put in front of every store handle. */
	struct ferry_diskcache *dcache;
	/* The newest view of the catalog; holds one reference. Read and
	 * replaced only through snap_get() and snap_clear() (snapshot.h),
	 * under their lock. */
	struct snap *snap;
	struct registry *reg; /* the open clones (registry.h) */
	/* Every entry's owner, and the permission bits taken off every mode:
	 * the mounting user and 077 unless -o uid=,gid=,umask= say otherwise. */
	uid_t uid;
	gid_t gid;
	mode_t umask;
	int64_t mounted_ns;
	char *mnt;             /* absolute path of the mount point, for VM definitions */
	const char *vault_dir; /* absolute */
	char vault_id[64];     /* seeds the UUIDs of failed-over VMs */

	/* The kernel's read-ahead for the mount, in KiB (0: left alone, as
	 * it is unless -o page_cache: direct reads have none), and
	 * the mount's device ("MAJ:MIN", empty if unknown), which names its
	 * backing device in /sys/class/bdi. ra_lock and ra_done make the first
	 * request set it, once (see req_fs in ops.c). */
	unsigned long read_ahead_kb;
	char bdi[32];
	pthread_mutex_t ra_lock;
	int ra_done;

	/* -o page_cache: serve live and point images through the kernel's
	 * page cache instead of directly (see op_open in ops.c). */
	int page_cache;
};
