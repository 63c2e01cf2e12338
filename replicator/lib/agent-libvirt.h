/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `libvirt` change tracker of ferry-agent: continuous replication of a
 * domain that libvirt runs, where a third party cannot reach qemu's monitor
 * (libvirt owns it), through libvirt's own incremental backup: checkpoints
 * (a persistent dirty bitmap per qcow2 disk) and a pull-mode backup job,
 * which exports every disk at one instant over NBD, with the changes since
 * a checkpoint as a dirty bitmap.
 *
 * Each cycle is one virDomainBackupBegin: the backup (an NBD server on a
 * unix socket in the run directory, a scratch file per disk there, and the
 * last checkpoint whose changes are durably in the cache as its
 * incremental base) and a new checkpoint, created together at the same
 * instant. The tracker reads each disk's export (export name: the disk's
 * target, such as vda; bitmap qemu:dirty-bitmap:backup-<target>), ships
 * what changed with the machinery it shares with the qemu tracker
 * (viewship.h), ends the job, records the new checkpoint in the state
 * directory and deletes the previous one, so each qcow2 holds one Ferry
 * bitmap between cycles and two during one. A cycle that fails deletes the
 * checkpoint it made and keeps the previous one, so the next incremental
 * covers both.
 *
 * Checkpoints are named ferry-<vm>-<generation>. At (re)connection the
 * tracker reconciles with what an earlier agent left: a backup job of its
 * own is ended, every checkpoint of its own but the recorded one deleted,
 * and when the recorded one is gone (or none is recorded) the next cycle
 * reads every disk whole, shipping only what differs from its fingerprints
 * where it has them. A checkpoint that libvirt finds broken (qemu killed,
 * say) counts as gone. The first cycle reads every allocated extent.
 *
 * Disks must be qcow2: libvirt keeps no checkpoint for a raw disk, and the
 * tracker refuses one with an error naming it. It never reads a running
 * domain's files itself (what that reads is not crash-consistent).
 *
 * An app-consistent cycle freezes the guest's file systems through
 * libvirt (its guest agent channel, virDomainFSFreeze) just before the
 * backup begins and thaws them as soon as it has; its marker says
 * app-consistent only when the freeze held across the begin.
 */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-scan.h"
#include "ferry/crypto.h"
#include "viewship.h"

struct ferry_cache;

/* The run directory's parent when the configuration names none. */
#define AGENT_LIBVIRT_RUN_BASE "/var/lib/ferry/libvirt"

struct agent_libvirt_params {
	/* What the shipping takes (viewship.h). state_dir: the agent's own,
	 * with the fingerprints and the last shipped checkpoint's name
	 * (libvirt.checkpoint). disks: name, the disk's name in the vault;
	 * path, its target in the domain (vda, vdb, ...). */
	struct viewship_params ship;
	const char *uri;    /* libvirt connection; NULL: qemu:///system */
	const char *domain; /* the libvirt domain's name */
	/* Where libvirt's qemu finds the NBD socket and the scratch files: it
	 * must be able to reach it (the agent makes it its own, 0700, when the
	 * agent runs as root). NULL: AGENT_LIBVIRT_RUN_BASE/<vm>. */
	const char *run_dir;
	/* The agent makes app-consistent cuts: at its first connection the
	 * guest is thawed, in case an agent was killed between a freeze and
	 * its thaw (libvirt's freeze has no time limit of its own). */
	int freezes;
};

struct agent_libvirt;

/* Checks the parameters (targets, socket path length) and keeps them;
 * connects to nothing yet. params must outlive the tracker. */
int agent_libvirt_new(const struct agent_libvirt_params *p, struct agent_libvirt **ret);
/* Closes the connection; leaves the recorded checkpoint in libvirt. */
struct agent_libvirt *agent_libvirt_free(struct agent_libvirt *al);

/*
 * One cycle, as above. Returns 1 when the marker is durably in the cache,
 * -errno on error (logged, naming the VM, domain and disk): -ESRCH while
 * the domain does not run, -EOPNOTSUPP for a raw disk, -ECONNRESET when
 * the connection to libvirt was lost (the next call reconnects).
 * ret->scanned_bytes counts bytes read over NBD.
 */
int agent_libvirt_cycle(struct agent_libvirt *al, struct agent_scan_stats *ret);

/*
 * Asks the next cycle for an app-consistent cut (viewship_app in
 * viewship.h): the guest's file systems are frozen through libvirt (the
 * domain needs a guest agent channel) just before the backup begins and
 * thawed right after; the freeze must hold across the begin.
 */
void agent_libvirt_want_app(struct agent_libvirt *al);

/* As agent_qemu_resync. */
void agent_libvirt_resync(struct agent_libvirt *al, uint64_t base_seq, const struct ferry_id *prev,
			  int adopted);
