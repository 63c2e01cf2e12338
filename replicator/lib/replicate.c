/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One VM's replication pass: take its waiting segments from its cache in
 * sequence order, apply each (apply.c), acknowledge it and delete it. Used
 * by ferry-replicator, and by 'ferry failover' to apply what is left before
 * failing over to the latest processed state.
 *
 * While one segment is applied, the prefetcher (pipeline.h) already reads
 * and prepares (verifies, unpacks, hashes) the next one: the apply is then
 * mostly placing chunks, writing the pack and committing, and reading the
 * cache overlaps with the store's syncs. The acker acknowledges applied
 * segments and deletes them from the cache on a thread of its own.
 */
#include "replicate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "pipeline.h"
#include "resync.h"

/* Records a refused segment on the VM so 'ferry status' shows it. */
static void mark_error(struct ferry_vault *v, const char *vm_name, const char *what)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	if (ferry_catalog_vm_get(c, vm_name, &vm) < 0)
		return;
	if (vm.state == FERRY_VM_ERROR && strcmp(vm.error, what) == 0)
		return;
	/* A resync waits on: the error is shown beside it. */
	if (vm.state != FERRY_VM_RESYNC_REQUIRED && vm.state != FERRY_VM_RESYNCING)
		vm.state = FERRY_VM_ERROR;
	snprintf(vm.error, sizeof(vm.error), "%s", what);
	if (ferry_catalog_begin(c) < 0)
		return;
	if (ferry_catalog_vm_update(c, &vm) < 0 ||
	    ferry_catalog_event_add(c, vm.id, "error", what) < 0) {
		ferry_catalog_rollback(c);
		return;
	}
	ferry_catalog_commit(c);
}

int replicate_vm(struct ferry_vault *v, const struct ferry_vm *vm,
		 const volatile sig_atomic_t *stop)
{
	return replicate_vm_counted(v, vm, stop, NULL);
}

int replicate_vm_counted(struct ferry_vault *v, const struct ferry_vm *vm,
			 const volatile sig_atomic_t *stop, struct replicate_stats *stats)
{
	struct replicate_stats none = { 0 };
	if (!stats)
		stats = &none;
	const uint64_t errors_before = stats->cache_errors + stats->refused;
	struct ferry_cache *cache;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r < 0) {
		stats->cache_errors++;
		char what[FERRY_URL_MAX + 64];
		snprintf(what, sizeof(what), "cannot open cache %s: %s", vm->cache_url,
			 strerror(-r));
		mark_error(v, vm->name, what);
		return log_error_errno(r, "VM %s: cannot open cache %s", vm->name, vm->cache_url);
	}

	/* A crash between commit and ack leaves the ack behind the catalog. */
	struct ferry_ack ack;
	if (vm->applied_seq > 0 && ferry_cache_get_ack(cache, vm->name, &ack) >= 0 &&
	    ack.seq < vm->applied_seq) {
		ack = (struct ferry_ack){ vm->applied_seq, vm->applied_digest };
		r = ferry_cache_put_ack(cache, vm->name, &ack);
		if (r < 0)
			log_warning_errno(r, "VM %s: cannot refresh the ack in %s", vm->name,
					  vm->cache_url);
	}

	/* An agent's want, or a resync a crash left unpublished. */
	struct ferry_vm cur = *vm;
	r = resync_pass(v, vm, cache);
	if (r < 0)
		log_warning_errno(r, "VM %s: cannot answer the agent's resync want", vm->name);
	if (r > 0 || cur.state == FERRY_VM_RESYNC_REQUIRED)
		(void)ferry_catalog_vm_get(ferry_vault_catalog(v), vm->name, &cur);
	/* Segments of a chain that a resync replaced are removed unapplied. */
	uint64_t replaced = resync_replaced_up_to(v, &cur);
	enum ferry_vm_state state = cur.state;
	char resync_why[FERRY_URL_MAX + 128 + 512 + 32] = "";

	uint64_t *seqs = NULL, bytes;
	size_t n = 0;
	r = ferry_cache_list_segments(cache, vm->name, &seqs, &n, &bytes);
	if (r < 0) {
		log_error_errno(r, "VM %s: cannot list segments in %s", vm->name, vm->cache_url);
		stats->cache_errors++;
		goto out;
	}

	/* Segments come sorted: the ones to apply follow those applied before. */
	size_t first = 0;
	while (first < n && seqs[first] <= MAX(vm->applied_seq, replaced))
		first++;
	/* Helper threads; without them (they could not start) the same work
	 * is done in line. */
	struct prefetcher *pf = NULL;
	struct acker *ak = NULL;
	if (first < n) {
		(void)prefetcher_start(v, vm->cache_url, vm->name, seqs + first, n - first, &pf);
		(void)acker_start(vm->cache_url, vm->name, &ak);
	}

	int applied = 0;
	for (size_t i = 0; i < n && !(stop && *stop); i++) {
		char label[FERRY_URL_MAX + 128];
		snprintf(label, sizeof(label), "%s/segments/%s/%016llx.seg", ferry_cache_url(cache),
			 vm->name, (unsigned long long)seqs[i]);

		/* Left over from a crash between commit and delete: the catalog
		 * has it, whatever state the file is in. */
		if (seqs[i] <= vm->applied_seq) {
			r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
			if (r < 0) {
				log_error_errno(r, "VM %s: cannot delete applied segment %s",
						vm->name, label);
				break;
			}
			log_info("VM %s: segment %llu was applied before; removed from the cache",
				 vm->name, (unsigned long long)seqs[i]);
			continue;
		}
		if (seqs[i] <= replaced) {
			r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
			if (r < 0) {
				log_error_errno(r, "VM %s: cannot delete replaced segment %s",
						vm->name, label);
				break;
			}
			log_info("VM %s: segment %llu belongs to the chain a resync replaced; "
				 "removed from the cache",
				 vm->name, (unsigned long long)seqs[i]);
			continue;
		}

		struct fetched it = pf ? prefetcher_take(pf) :
					 fetch_segment(v, cache, vm->name, seqs[i]);
		if (it.read_failed) {
			r = it.r;
			log_error_errno(r, "VM %s: cannot read segment %s", vm->name, label);
			stats->cache_errors++;
			break;
		}
		struct apply_result res;
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", it.msg);
		r = it.r;
		if (r >= 0)
			r = apply_prepared(v, vm->name, seqs[i], it.p, &res, msg, sizeof(msg));
		apply_prepared_free(it.p);
		if (r == -EAGAIN) {
			log_warning("VM %s: segment %s: %s", vm->name, label, msg);
			break;
		}
		if (r < 0) {
			char what[sizeof(label) + sizeof(msg) + 32];
			snprintf(what, sizeof(what), "segment %s refused: %s", label, msg);
			log_error_errno(r, "VM %s: %s", vm->name, what);
			stats->refused++;
			/* Damage, or a chain that does not follow: a resync repairs
			 * it, once the helpers are done with the cache. A segment
			 * from a newer agent, or one that does not fit the VM,
			 * would be refused again after one. */
			if (r == -ESTALE || r == -EBADMSG || r == -EFBIG)
				snprintf(resync_why, sizeof(resync_why), "%s", what);
			else
				mark_error(v, vm->name, what);
			break;
		}

		/* The catalog holds the segment now: acknowledge, then delete.
		 * A crash between the steps repeats them harmlessly. */
		struct ferry_vm now;
		r = ferry_catalog_vm_get(ferry_vault_catalog(v), vm->name, &now);
		if (r >= 0) {
			resync_applied(v, state, &now, cache);
			state = now.state;
			ack = (struct ferry_ack){ now.applied_seq, now.applied_digest };
			if (ak) {
				r = acker_push(ak, &ack, seqs[i]);
			} else {
				r = ferry_cache_put_ack(cache, vm->name, &ack);
				if (r >= 0)
					r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
			}
		}
		if (r < 0) {
			log_error_errno(r, "VM %s: cannot acknowledge segment %s", vm->name, label);
			stats->cache_errors++;
			break;
		}
		if (res.already_applied)
			log_info("VM %s: segment %llu was applied before; removed from the cache",
				 vm->name, (unsigned long long)res.seq);
		else {
			applied++;
			stats->applied_segments++;
			stats->applied_bytes += res.data_bytes;
			log_debug("VM %s: applied segment %llu: %llu data bytes, %llu stored, "
				  "%u marker(s), %u point(s)",
				  vm->name, (unsigned long long)res.seq,
				  (unsigned long long)res.data_bytes,
				  (unsigned long long)res.stored_bytes, res.markers, res.points);
			if (res.points)
				log_info("VM %s: %u new recovery point(s) at segment %llu",
					 vm->name, res.points, (unsigned long long)res.seq);
		}
	}
	prefetcher_stop(pf);
	if (ak) {
		int k = acker_finish(ak);
		if (k < 0 && r >= 0)
			r = k;
	}
	if (resync_why[0]) {
		r = resync_start(v, vm->name, cache, resync_why, NULL);
		if (r < 0) {
			mark_error(v, vm->name, resync_why);
			log_error_errno(r, "VM %s: a resync could not be started", vm->name);
		}
	}
	if (r >= 0)
		r = applied;
out:
	if (r < 0 && stats->cache_errors + stats->refused == errors_before)
		stats->other_errors++;
	free(seqs);
	ferry_cache_free(cache);
	return r;
}
