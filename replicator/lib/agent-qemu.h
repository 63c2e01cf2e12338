/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `qemu` change tracker of ferry-agent: continuous replication of a
 * running qemu or qemu-storage-daemon, reached over a QMP socket that Ferry
 * owns (a monitor serves one client: the VM gets a second monitor for
 * Ferry). qemu keeps a dirty bitmap per disk at 4 KiB granularity; each
 * cycle cuts every disk of the VM at one instant with one QMP transaction
 * (a fleecing view per disk: blockdev-backup sync=none into a scratch
 * qcow2 overlay backed by the disk; the current bitmap frozen, the next
 * one started), exports each view over NBD from qemu with the frozen bitmap
 * attached, reads only the dirty extents (zeroed ranges become ZERO records
 * without a read), ships them as segments ending in a crash-consistent
 * marker, and drops the export, the job, the view and the frozen bitmap.
 * A cycle in which nothing was written still ships its marker.
 *
 * The first cycle, and any cycle after the bitmap was lost (qemu restarted,
 * or a persistent bitmap came back inconsistent), reads every allocated
 * extent instead. An agent killed at any point finds what it left in qemu
 * at its next start: views, exports and jobs are removed, and every bitmap
 * of an unfinished cycle is merged into the recording one, so no write is
 * ever skipped (some are shipped twice, which the replicator absorbs).
 * The segment chain continues from the cache: the acknowledgement and the
 * newest segment there say where it stands, so the tracker keeps no chain
 * state of its own.
 */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-scan.h"
#include "ferry/crypto.h"
#include "viewship.h"

struct ferry_cache;
struct groupcut_params;

struct agent_qemu_params {
	/* What the shipping takes (viewship.h). state_dir: a directory of the
	 * agent's own, where the scratch overlays of the views and the NBD
	 * server's socket live too (qemu opens them, so it must be able to:
	 * same host, a user qemu can reach). disks: name, the disk's name in
	 * the vault; path, its block node name in qemu
	 * (query-named-block-nodes), where the bitmaps live. */
	struct viewship_params ship;
	const char *qmp_path; /* the QMP socket Ferry owns */
	int qmp_timeout_ms;   /* per QMP reply; 0: 10 s */
	/* NULL: the agent runs qemu's NBD server itself, on a socket in
	 * state_dir, for the time of each read. Otherwise the socket of an
	 * NBD server that somebody else started in qemu (qemu runs one): the
	 * agent adds its exports there and leaves the server alone. */
	const char *nbd_socket;
	/* The VM's consistency group, or NULL: the cycle that finds a new
	 * round due cuts with the group's other members (groupcut.h), the VM
	 * paused for the time (QMP stop: qemu-system only). */
	const struct groupcut_params *group;
	/* The guest agent's socket (qga.h), or NULL: a cycle asked for an
	 * app-consistent cut (agent_qemu_want_app) freezes the guest through
	 * it around the cut, for at most freeze_limit_ms (0: the default of
	 * freeze.h). */
	const char *qga_path;
	int freeze_limit_ms;
};

struct agent_qemu;

/* Checks the parameters (names qemu accepts, a socket path that fits) and
 * keeps them; connects to nothing yet. params must outlive the tracker. */
int agent_qemu_new(const struct agent_qemu_params *p, struct agent_qemu **ret);
/* Drops the QMP connection; leaves qemu's bitmaps (the next agent merges
 * them) but nothing else of a cycle. */
struct agent_qemu *agent_qemu_free(struct agent_qemu *aq);

/*
 * One cycle, as above. Returns 1 when the marker is durably in the cache,
 * -errno on error (logged, naming the VM and disk; a lost QMP connection is
 * -ECONNRESET and the next call reconnects and recovers). A failed cycle
 * leaves its frozen bitmap in qemu, merged into the next cycle's.
 * ret->scanned_bytes counts bytes read over NBD.
 */
int agent_qemu_cycle(struct agent_qemu *aq, struct agent_scan_stats *ret);

/*
 * Asks the next cycle for an app-consistent cut (viewship_app in
 * viewship.h): it makes the views of every disk, freezes the guest
 * (freeze.h: its freeze hook runs, its file systems are synced and
 * frozen), cuts, and thaws right after the cut, before anything is read,
 * so that the guest is frozen for the QMP transaction only. Needs
 * qga_path.
 */
void agent_qemu_want_app(struct agent_qemu *aq);

/*
 * A resync the agent adopted (agent-sync.h): the chain goes on after
 * base_seq, with prev, until the cache holds a newer segment or ack. With
 * adopted, the state directory's fingerprint files were just replaced by
 * the vault's: they are opened again, and the next cycle reads every disk
 * whole and ships what differs from them.
 */
void agent_qemu_resync(struct agent_qemu *aq, uint64_t base_seq, const struct ferry_id *prev,
		       int adopted);
