/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What ferry-agent does around every cycle, whichever tracker runs it: it
 * holds the VM's lease in the cache (one agent per VM, even with another
 * state directory), it checks that its state directory still matches the
 * chain in the cache (not a restored copy, not another agent's chain, no
 * segment of its own gone missing) and asks the vault for a resync when it
 * does not, and it adopts a resync the vault published: the vault's
 * fingerprints become the tracker's, and the chain continues from the
 * vault's base. The state identity (a random id made once) and what it
 * knows of the chain live in <state>/identity (docs/format/agent-state.md);
 * the records in the cache are control.h's.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent-scan.h"
#include "ferry/cache.h"
#include "ferry/crypto.h"

struct agent_sync_params {
	const char *vm;
	const char *state_dir;
	struct ferry_cache *cache;
	enum ferry_tracker tracker;
	/* The scan tracker's parameters (its progress file); NULL for qemu
	 * and libvirt. */
	const struct agent_scan_params *scan;
	/* The disks by their names in the vault: <state>/<name>.fp (scan) or
	 * <name>.qfp (qemu, libvirt) hold their fingerprints. */
	const struct agent_disk *disks;
	size_t ndisks;
	unsigned lease_s; /* how long the lease outlives its last renewal */
	const char *host; /* shown to an agent the lease keeps out */
	uint32_t pid;
};

struct agent_sync;

/* Reads the state identity, or makes one (params must outlive it). */
int agent_sync_new(const struct agent_sync_params *p, struct agent_sync **ret);
struct agent_sync *agent_sync_free(struct agent_sync *s);

/* The resync this state adopted (epoch 0: none): until the cache holds a
 * newer segment or ack, the tracker's next segment is base_seq + 1 with
 * prev base_digest. */
struct agent_sync_base {
	uint64_t epoch;
	uint64_t base_seq;
	struct ferry_id base_digest;
};

/*
 * Before a cycle. 0: run it. 1: run it, a resync was adopted just now.
 * Either way *ret says where a resync this state adopted puts the chain
 * (the scan tracker's progress already says so; the qemu tracker, which
 * takes its chain from the cache, must be told every cycle). -EBUSY: another agent holds the VM's lease
 * (why says who and until when; nothing was written to the cache).
 * -ESTALE: this state is behind the chain; a resync was asked for and the
 * cycle must not run (why says so). Other -errno: the cache failed.
 */
int agent_sync_begin(struct agent_sync *s, struct agent_sync_base *ret, char *why, size_t why_size);
/* After a complete cycle whose marker is segment seq: the state identity
 * and the lease learn it. */
int agent_sync_end(struct agent_sync *s, uint64_t seq);
/* Renews the lease through c (a handle of the calling thread's own).
 * -ENOLCK when another agent holds it now. */
int agent_sync_renew(struct agent_sync *s, struct ferry_cache *c);
