/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Resync, the vault's side: when the agent's chain and the vault disagree
 * (a segment lost or damaged, a chain that does not follow, an agent that
 * asks because its state is behind), the vault publishes the fingerprints
 * of the VM's image and a chain base beyond every seq of the old chain;
 * the agent ships what differs from them, chained to that base, and the VM
 * is protected again. docs/format/cache.md ("Resync") gives the protocol.
 * The caller holds the vault's writer lock.
 */
#pragma once

#include <stdint.h>

#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/vault.h"

/* How far beyond every seq of the old chain a resync's base lies: an
 * agent that has not read the request yet may go on putting the rest of
 * its cycle, and none of that may reach the base (2^24 segments of 16 MiB
 * are 256 TiB). */
#define RESYNC_SEQ_SKIP (UINT64_C(1) << 24)

/*
 * Starts a resync of VM vm_name: records it (state resync-required, a new
 * epoch, the base, reason as the VM's error and an event), publishes the
 * fingerprints of the VM's work image and the request in cache, and
 * deletes the segments of the old chain that wait there. *ret_epoch (may
 * be NULL) gets the epoch. A publication that fails is retried by the next
 * resync_pass.
 */
int resync_start(struct ferry_vault *v, const char *vm_name, struct ferry_cache *cache,
		 const char *reason, uint64_t *ret_epoch);

/*
 * At the start of a VM's pass: republishes a request a crash or a failed
 * put left out of the cache, and answers the agent's want (a resync it
 * asks for). Returns 1 when it started a resync, 0 when not, -errno.
 */
int resync_pass(struct ferry_vault *v, const struct ferry_vm *vm, struct ferry_cache *cache);

/* Waiting segments up to this seq belong to a chain that a resync
 * replaced: they are removed unapplied. 0 when there is none. */
uint64_t resync_replaced_up_to(struct ferry_vault *v, const struct ferry_vm *vm);

/* After a segment applied: records the resync's progress when the VM left
 * resync-required (the agent's chain resumed) or became protected (the
 * resync is complete; its fingerprints leave the cache). */
void resync_applied(struct ferry_vault *v, enum ferry_vm_state before, const struct ferry_vm *now,
		    struct ferry_cache *cache);
