/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The failover state machine: which failover verb may run on a VM in which
 * state, in which role of the vault, and the state it leads to. The rules
 * live here and only here (docs/failover.md has them as a table); every
 * verb asks fostate_require() before it changes anything, and a refusal
 * says why and what to do instead.
 *
 * Also what the verbs need around those rules: the replicator's lifetime
 * lock (which failback refuses to run beside), and the segments an old
 * source kept shipping after its VM failed over, which resume-replication
 * discards rather than apply. (The vault's writer lock, waited for, is
 * maint_writer_lock_wait.)
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/catalog.h"
#include "ferry/vault.h"

enum fostate_verb {
	FOSTATE_TEST_FAILOVER,
	FOSTATE_TEST_FAILOVER_CLEANUP,
	FOSTATE_FAILOVER,
	FOSTATE_CHANGE_RECOVERY_POINT,
	FOSTATE_COMMIT,
	FOSTATE_REPROTECT_PREPARE,
	FOSTATE_REPROTECT,
	FOSTATE_FAILBACK,
	FOSTATE_RESUME_REPLICATION,
	FOSTATE_NVERBS,
};

/*
 * A VM's role in a vault. Forward: the vault protects the VM (enabled
 * there; it fails over there). Back: reprotect-prepare seeded the VM into
 * the vault at the source site, and the failed-over VM replicates back
 * into it until failback. Kept as the VM's resource "role" (absent:
 * forward), so that ferry attach restores it with the VM record.
 */
enum fostate_role {
	FOSTATE_FORWARD,
	FOSTATE_BACK,
};

/* "test-failover", "failback", ...: the verb as typed. */
const char *fostate_verb_name(enum fostate_verb verb);
/* "forward", "back". */
const char *fostate_role_name(enum fostate_role role);

int fostate_role_get(struct ferry_catalog *c, int64_t vm_id, enum fostate_role *ret);
/* In the caller's write transaction. */
int fostate_role_set(struct ferry_catalog *c, int64_t vm_id, enum fostate_role role);

/*
 * The rules. vm is NULL when the VM is not in the vault (only
 * reprotect-prepare accepts that). On 0 the verb may run and *ret_next is
 * the state it leads to (the current one where it changes none); on
 * -EPERM it may not and msg says why and what to do, naming the VM and
 * vault_dir. Pure: reads nothing but its arguments.
 */
int fostate_check(const char *vault_dir, const char *vm_name, const struct ferry_vm *vm,
		  enum fostate_role role, enum fostate_verb verb, enum ferry_vm_state *ret_next,
		  char *msg, size_t msgsize);

/* fostate_check on vm as the catalog of v has it (its role read there),
 * logging the refusal; -EPERM then. ret_next may be NULL. */
int fostate_require(struct ferry_vault *v, const struct ferry_vm *vm, enum fostate_verb verb,
		    enum ferry_vm_state *ret_next);

/*
 * Inside the write transaction that moves the VM: -ESTALE if its state is
 * no longer expected (another verb moved it since the check), logged with
 * what to do. vm gets the VM as it is now.
 */
int fostate_recheck(struct ferry_catalog *c, struct ferry_vm *vm, enum ferry_vm_state expected);

/*
 * The replicator's lock, DIR/replicator.lock, held (flock) by one
 * ferry-replicator for its whole life and released by the kernel however
 * it ends, kill -9 included; the file holds its pid for messages.
 * fostate_replicator_lock takes it for a replicator and writes the pid;
 * -EBUSY if another holds it. fostate_replicator_exclude takes it for a
 * verb that must not run beside a replicator, so that none starts while
 * it runs; -EBUSY with the holder's pid in *ret_pid (0 if unknown).
 */
int fostate_replicator_lock(const char *vault_dir, int *ret_fd);
int fostate_replicator_exclude(const char *vault_dir, int *ret_fd, pid_t *ret_pid);

/*
 * Segments waiting in the VM's cache beyond what the vault applied: after
 * a failover, what the old source kept shipping. They must link onto the
 * applied chain (-EBADMSG otherwise, msg says which does not); count 0
 * when none wait.
 */
struct fostate_abandoned {
	size_t count;
	uint64_t first_seq, last_seq;
	struct ferry_id last_digest;
	uint64_t bytes;
};
int fostate_abandoned_find(const struct ferry_vm *vm, struct fostate_abandoned *ret, char *msg,
			   size_t msgsize);
/* Once the catalog took ab->last_seq as applied: acknowledges it to the
 * agent and deletes the segments from the cache. */
int fostate_abandoned_drop(const struct ferry_vm *vm, const struct fostate_abandoned *ab);
