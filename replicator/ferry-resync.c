/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry resync: a resync on demand. The replicator starts one by itself
 * whenever the agent's chain and the vault disagree (resync.h); this verb
 * does the same when an operator has a reason the vault cannot see (a disk
 * restored behind the agent's back, say). It takes the vault's writer
 * lock, waiting for a running replicator's pass to end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "cli.h"
#include "ferry/cache.h"
#include "ferry/log.h"
#include "maint.h"
#include "resync.h"

/* A replicator holds the writer lock for one pass at a time. */
#define LOCK_WAIT_S 60

static int resyncable(enum ferry_vm_state s)
{
	return s == FERRY_VM_INITIAL || s == FERRY_VM_PROTECTED || s == FERRY_VM_ERROR ||
	       s == FERRY_VM_RESYNC_REQUIRED || s == FERRY_VM_RESYNCING;
}

static const char resync_help[] =
	"Usage: ferry resync --vault DIR VM\n"
	"\n"
	"Forces a resync of VM: the vault publishes the fingerprints of its image of\n"
	"the VM's disks in the VM's cache, the agent's next cycle ships only the\n"
	"blocks that differ from them, and the VM is protected again. The replicator\n"
	"does this by itself when segments are lost or damaged or the agent's state\n"
	"is behind; 'ferry status' shows resync-required, then resyncing.\n";

int cmd_resync(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *name;
	int r = one_vm_args(argc, argv, resync_help, &o, &name);
	if (r >= 0)
		return r;
	if (!o.vault) {
		log_error("--vault DIR is required (see --help)");
		return 2;
	}
	_cleanup_close_ int lock = -1;
	r = maint_writer_lock_wait(o.vault, LOCK_WAIT_S, &lock);
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", o.vault), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(o.vault, 0, &v) < 0 || get_vm(v, name, &vm) < 0)
		return 1;
	if (!resyncable(vm.state))
		return log_error("VM %s is %s: nothing replicates into it to resync", vm.name,
				 ferry_vm_state_name(vm.state)),
		       1;
	_cleanup_(ferry_cache_freep) struct ferry_cache *cache = NULL;
	r = ferry_cache_open(vm.cache_url, 0, &cache);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot open cache %s", vm.name, vm.cache_url), 1;
	uint64_t epoch;
	r = resync_start(v, vm.name, cache, "requested by ferry resync", &epoch);
	if (r < 0)
		return log_error_errno(r, "VM %s: the resync could not be started", vm.name), 1;
	fprintf(stderr,
		"Resync %" PRIu64 " of VM %s published in %s: the agent's next cycle ships what "
		"differs.\n",
		epoch, vm.name, vm.cache_url);
	return 0;
}
