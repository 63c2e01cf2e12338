/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the trackers that read a point-in-time view over NBD share: the
 * `qemu` tracker (agent-qemu.h, views it makes over QMP) and the `libvirt`
 * tracker (agent-libvirt.h, views libvirt's pull-mode backup exports). Once
 * a view of every disk exists, the rest of a cycle is the same: walk each
 * view with its dirty bitmap (or, in a full cycle, every allocated extent),
 * read what changed, ship it as DATA and ZERO records in segments of about
 * 16 MiB, and end the cycle with a marker. Alongside, each disk's
 * fingerprint file (fpfile.h, <disk>.qfp in the state directory) learns
 * what every segment carries once that segment is in the cache, so that a
 * full cycle after a lost bitmap, or a resync, ships only what differs.
 * The segment chain continues from the cache (the acknowledgement and the
 * newest segment waiting there), so no chain state is kept here.
 *
 * A cycle: viewship_begin, per disk viewship_open_fingerprints, the
 * tracker's cut and export, per disk viewship_read, viewship_marker, and
 * once the marker is in the cache viewship_shipped per disk.
 */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-scan.h"
#include "ferry/crypto.h"

struct ferry_cache;
struct fpfile;

/* One disk as the tracker and this module share it. */
struct viewship_disk {
	const char *name; /* in the vault */
	uint16_t idx;     /* in the VM, the segments' disk index */
	uint64_t size;    /* bytes; the tracker sets it before each cycle */
	/* This cycle reads every allocated extent: no usable bitmap, or no
	 * full cycle completed yet (no fingerprint baseline). The tracker sets
	 * it for a lost bitmap; viewship_open_fingerprints for the rest. */
	int full;
	int compare; /* full, and ships only what differs from the fingerprints */
	char *fp_path;
	struct fpfile *fp;
	uint64_t fp_size; /* the disk size fp was opened for */
};

struct viewship_params {
	const char *vm;
	const char *state_dir; /* <disk>.qfp live there */
	/* Their names, in index order; the paths are not used here. */
	const struct agent_disk *disks;
	size_t ndisks;
	struct ferry_cache *cache;
	const volatile sig_atomic_t *stop; /* a read stops with -EINTR when set */
	uint32_t chunk_size;               /* as agent_scan_params */
	unsigned compress_workers;         /* as agent_scan_params */
};

struct viewship;

/* Keeps p (which must outlive the result) and makes one viewship_disk per
 * disk, fingerprint files not opened yet. */
int viewship_new(const struct viewship_params *p, struct viewship **ret);
struct viewship *viewship_free(struct viewship *vs);
struct viewship_disk *viewship_disk(struct viewship *vs, size_t i);

/*
 * Starts a cycle whose figures go into *st (the tracker's; this module adds
 * bytes read, shipped and zeroed, segments and the last seq): finds where
 * the chain stands in the cache and drops whatever an earlier, failed cycle
 * left in the segment being filled.
 */
int viewship_begin(struct viewship *vs, struct agent_scan_stats *st);
/* Whether the cycle begun is the chain's first: its target starts empty. */
int viewship_first_cycle(const struct viewship *vs);

/* Opens d's fingerprint file for its size and decides whether this cycle
 * reads it whole (d->full) and compares (d->compare). why_full says, for
 * the warning, why a disk the tracker marked full is (e.g. "lost its dirty
 * bitmap (qemu restarted?)"). */
int viewship_open_fingerprints(struct viewship *vs, struct viewship_disk *d, const char *why_full);

/* Reads d's view: export export_name of the NBD server on the unix socket
 * path, with the dirty bitmap bitmap (meta context qemu:dirty-bitmap:NAME),
 * or every allocated extent when d->full or bitmap is NULL; ships what it
 * finds. */
int viewship_read(struct viewship *vs, struct viewship_disk *d, const char *socket_path,
		  const char *export_name, const char *bitmap);

/* Ends the cycle's records with a marker (enum ferry_consistency) of time
 * marker_ns, the cut of consistency group round group_round (0: a cut of
 * this VM alone), and puts the last segment: once this returns 0 the
 * marker is durably in the cache. */
int viewship_marker(struct viewship *vs, int consistency, int64_t marker_ns, uint64_t group_round);

/* After viewship_marker: a full cycle of d completed, so its fingerprints
 * now say what the chain holds (records the baseline). Logs a failure,
 * which costs only blocks shipped again later. */
void viewship_shipped(struct viewship *vs, struct viewship_disk *d);

/*
 * App-consistent cuts, as both trackers make them: the next cycle is asked
 * for one (their *_want_app), the tracker freezes the guest around its cut
 * and the marker is of kind app only when the freeze held across it;
 * otherwise the cycle goes on crash-consistent, logs a warning and records
 * why. How the last attempt went carries over cycles into the app_* fields
 * of agent_scan_stats.
 */
struct viewship_app {
	int want; /* the next cycle is to be app-consistent */
	int error;
	int64_t attempt_ns, ok_ns;
	char message[256];
};

/* Records that this cycle's attempt failed with r (-errno; EIO if not
 * negative) and why, and warns, naming vm, that the point is
 * crash-consistent. */
__attribute__((format(printf, 4, 5))) void
viewship_app_failed(struct viewship_app *a, const char *vm, int r, const char *fmt, ...);
/* Records how an app-consistent cut ended: shipped at marker_ns, or not
 * shipped, the cycle failing with r. */
void viewship_app_shipped(struct viewship_app *a, int shipped, int r, int64_t marker_ns);

/* Ends the cycle's figures in *st: its finish time, the marker's time,
 * the app-consistent state a, and the cycle's and the running totals. */
void viewship_end_stats(struct agent_scan_stats *st, const struct viewship_app *a,
			int64_t marker_ns);

/* As agent_qemu_resync. */
void viewship_resync(struct viewship *vs, uint64_t base_seq, const struct ferry_id *prev,
		     int adopted);
