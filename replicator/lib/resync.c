/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Resync, the vault's side (resync.h). The catalog is the truth: a resync
 * is first recorded there (state resync-required, its epoch, base and
 * reason), then published in the cache (a fingerprint blob per disk of the
 * VM's work image, then the request that names them), then the old chain's
 * waiting segments go. A crash after the record leaves a request missing
 * or older; every pass of a resync-required VM checks the request and
 * publishes it again, from the same work image (nothing is applied to a
 * resync-required VM but the resync's own chain).
 *
 * The work image, not the live one: it is what the next segment builds
 * on, and the agent's compare makes it equal to the source whatever half
 * cycle it holds.
 */
#include "resync.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/control.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "seed.h"

/* Chunks of the image read for its fingerprints. */
#define FP_CACHE_BYTES (64u << 20)

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_chunk_cache *, ferry_chunk_cache_free)

struct publish {
	struct ferry_vault *v;
	struct ferry_cache *cache;
	const char *vm;
	struct ferry_chunk_cache *cc;
	struct ferry_resync_request *q;
	int r;
};

/* One disk's fingerprints, as a blob of the request's epoch. */
static int publish_disk(const struct ferry_disk *d, void *userdata)
{
	struct publish *p = userdata;
	if (p->q->ndisks == FERRY_RESYNC_MAX_DISKS)
		return -E2BIG;
	struct ferry_resync_disk *rd = &p->q->disks[p->q->ndisks++];
	snprintf(rd->name, sizeof(rd->name), "%s", d->name);
	rd->size = d->size;
	if (d->size == 0)
		return 0; /* never declared: the agent ships it whole */
	struct ferry_image *img;
	int r = ferry_image_open(p->cc, &d->work_root, d->size, &img);
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot open the vault's image", p->vm,
				       d->name);
	_cleanup_free_ void *buf = NULL;
	size_t len;
	r = seed_fp_image(img, d->size, &buf, &len, &rd->sum);
	ferry_image_free(img);
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot fingerprint the vault's image",
				       p->vm, d->name);
	r = ferry_control_put_fp(p->cache, p->vm, p->q->epoch, d->name, buf, len);
	if (r < 0)
		return log_error_errno(r, "VM %s, disk %s: cannot put its fingerprints into %s",
				       p->vm, d->name, ferry_cache_url(p->cache));
	log_debug("VM %s, disk %s: %zu bytes of fingerprints published", p->vm, d->name, len);
	return 0;
}

/* The fingerprints, then the request that names them: an agent never
 * finds a request whose blobs are not there yet. */
static int publish(struct ferry_vault *v, const struct ferry_vm *vm,
		   const struct ferry_vm_resync *rs, struct ferry_cache *cache)
{
	_cleanup_free_ struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	*q = (struct ferry_resync_request){
		.epoch = rs->epoch,
		.base_seq = rs->base_seq,
		.base_digest = rs->base_digest,
		.requested_ns = rs->requested_ns,
		.applied_seq = vm->applied_seq,
	};
	struct publish p = { .v = v, .cache = cache, .vm = vm->name, .q = q };
	_cleanup_(ferry_chunk_cache_freep) struct ferry_chunk_cache *cc = NULL;
	int r = ferry_chunk_cache_new(v, FP_CACHE_BYTES, &cc);
	if (r < 0)
		return r;
	p.cc = cc;
	r = ferry_catalog_disk_list(ferry_vault_catalog(v), vm->id, publish_disk, &p);
	if (r < 0)
		return r;
	r = ferry_control_put_request(cache, vm->name, q);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot put the resync request into %s", vm->name,
				       ferry_cache_url(cache));
	log_info("VM %s: resync %" PRIu64 " published in %s: the agent's next segment is %" PRIu64,
		 vm->name, rs->epoch, ferry_cache_url(cache), rs->base_seq + 1);
	return 0;
}

/* The old chain's segments waiting in the cache, up to the base. */
static void drop_replaced(struct ferry_cache *cache, const char *vm, uint64_t up_to)
{
	uint64_t *seqs = NULL, bytes;
	size_t n = 0;
	if (ferry_cache_list_segments(cache, vm, &seqs, &n, &bytes) < 0)
		return; /* the next pass removes them */
	for (size_t i = 0; i < n && seqs[i] <= up_to; i++) {
		int r = ferry_cache_delete_segment(cache, vm, seqs[i]);
		if (r < 0) {
			log_warning_errno(r, "VM %s: cannot remove segment %" PRIu64 " from %s", vm,
					  seqs[i], ferry_cache_url(cache));
			break;
		}
	}
	free(seqs);
}

static uint64_t newest_waiting(struct ferry_cache *cache, const char *vm)
{
	uint64_t *seqs = NULL, bytes, top = 0;
	size_t n = 0;
	if (ferry_cache_list_segments(cache, vm, &seqs, &n, &bytes) >= 0 && n > 0)
		top = seqs[n - 1];
	free(seqs);
	return top;
}

/* The record: state, epoch, base, reason, event, in one transaction. */
static int record(struct ferry_catalog *c, struct ferry_vm *vm, const struct ferry_vm_resync *rs)
{
	char ev[640];
	snprintf(ev, sizeof(ev), "resync %" PRIu64 " requested: %s", rs->epoch, rs->reason);
	/* Not an error: the reason is the resync's, and shown with it. */
	vm->state = FERRY_VM_RESYNC_REQUIRED;
	vm->error[0] = 0;
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_resync_set(c, rs);
	if (r >= 0)
		r = ferry_catalog_vm_update(c, vm);
	if (r >= 0)
		r = ferry_catalog_event_add(c, vm->id, "warning", ev);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

int resync_start(struct ferry_vault *v, const char *vm_name, struct ferry_cache *cache,
		 const char *reason, uint64_t *ret_epoch)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	int r = ferry_catalog_vm_get(c, vm_name, &vm);
	if (r < 0)
		return r;
	struct ferry_vm_resync rs = { 0 };
	r = ferry_catalog_resync_get(c, vm.id, &rs);
	if (r < 0 && r != -ENOENT)
		return r;
	uint64_t old_epoch = r >= 0 ? rs.epoch : 0, old_base = r >= 0 ? rs.base_seq : 0;
	/* A request in the cache that the catalog does not know (a vault
	 * attached again from its store) still counts: epochs and bases only
	 * ever grow, or an agent that adopted it would ignore this one. */
	_cleanup_free_ struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	if (ferry_control_get_request(cache, vm_name, q) >= 0) {
		old_epoch = MAX(old_epoch, q->epoch);
		old_base = MAX(old_base, q->base_seq);
	}
	uint64_t top = MAX(MAX(vm.applied_seq, old_base), newest_waiting(cache, vm_name));
	if (top > UINT64_MAX - 2 * RESYNC_SEQ_SKIP || old_epoch == UINT64_MAX)
		return -EOVERFLOW;
	rs = (struct ferry_vm_resync){
		.vm_id = vm.id,
		.epoch = old_epoch + 1,
		.base_seq = top + RESYNC_SEQ_SKIP,
		.requested_ns = ferry_now_ns(),
	};
	snprintf(rs.reason, sizeof(rs.reason), "%s", reason);
	/* Random: only an agent that read the request can chain to it. */
	if (getentropy(rs.base_digest.b, sizeof(rs.base_digest.b)) < 0)
		return -errno;
	r = record(c, &vm, &rs);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot record a resync", vm_name);
	log_warning("VM %s: resync %" PRIu64 " requested: %s", vm_name, rs.epoch, reason);
	if (ret_epoch)
		*ret_epoch = rs.epoch;
	r = publish(v, &vm, &rs, cache);
	if (r < 0)
		return r;
	drop_replaced(cache, vm_name, rs.base_seq);
	(void)ferry_control_delete_fps(cache, vm_name, rs.epoch);
	(void)ferry_control_delete_want(cache, vm_name);
	return 0;
}

/* A resync-required VM whose request is not (or not yet) in the cache. */
static int ensure_published(struct ferry_vault *v, const struct ferry_vm *vm,
			    struct ferry_cache *cache)
{
	struct ferry_vm_resync rs;
	int r = ferry_catalog_resync_get(ferry_vault_catalog(v), vm->id, &rs);
	if (r < 0)
		return r;
	_cleanup_free_ struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	r = ferry_control_get_request(cache, vm->name, q);
	if (r >= 0 && q->epoch == rs.epoch && q->base_seq == rs.base_seq &&
	    ferry_id_equal(&q->base_digest, &rs.base_digest))
		return 0;
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		return r;
	log_info("VM %s: resync %" PRIu64 " is not in %s yet; publishing it", vm->name, rs.epoch,
		 ferry_cache_url(cache));
	r = publish(v, vm, &rs, cache);
	if (r >= 0) {
		drop_replaced(cache, vm->name, rs.base_seq);
		(void)ferry_control_delete_fps(cache, vm->name, rs.epoch);
	}
	return r;
}

static int answer_want(struct ferry_vault *v, const struct ferry_vm *vm, struct ferry_cache *cache)
{
	struct ferry_resync_want w;
	int r = ferry_control_get_want(cache, vm->name, &w);
	if (r == -ENOENT)
		return 0;
	if (r == -EBADMSG || r == -EPROTONOSUPPORT) {
		/* The agent asks again next cycle if it still wants one. */
		log_warning_errno(r, "VM %s: the agent's resync want in %s is unreadable; removed",
				  vm->name, ferry_cache_url(cache));
		(void)ferry_control_delete_want(cache, vm->name);
		return 0;
	}
	if (r < 0)
		return r;
	struct ferry_vm_resync rs = { 0 };
	r = ferry_catalog_resync_get(ferry_vault_catalog(v), vm->id, &rs);
	if (r < 0 && r != -ENOENT)
		return r;
	/* A resync newer than the agent had seen answers it already. */
	if (rs.epoch > w.seen_epoch) {
		(void)ferry_control_delete_want(cache, vm->name);
		return 0;
	}
	char reason[256];
	snprintf(reason, sizeof(reason), "the agent asked for one: %s",
		 ferry_want_reason_text(w.reason));
	r = resync_start(v, vm->name, cache, reason, NULL);
	return r < 0 ? r : 1;
}

int resync_pass(struct ferry_vault *v, const struct ferry_vm *vm, struct ferry_cache *cache)
{
	if (vm->state == FERRY_VM_RESYNC_REQUIRED) {
		int r = ensure_published(v, vm, cache);
		if (r < 0)
			log_warning_errno(r, "VM %s: the resync request is not published yet",
					  vm->name);
	}
	return answer_want(v, vm, cache);
}

uint64_t resync_replaced_up_to(struct ferry_vault *v, const struct ferry_vm *vm)
{
	struct ferry_vm_resync rs;
	if (vm->state != FERRY_VM_RESYNC_REQUIRED ||
	    ferry_catalog_resync_get(ferry_vault_catalog(v), vm->id, &rs) < 0)
		return 0;
	return rs.base_seq;
}

void resync_applied(struct ferry_vault *v, enum ferry_vm_state before, const struct ferry_vm *now,
		    struct ferry_cache *cache)
{
	if (before != FERRY_VM_RESYNC_REQUIRED && before != FERRY_VM_RESYNCING)
		return;
	if (now->state == before)
		return;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm_resync rs;
	if (ferry_catalog_resync_get(c, now->id, &rs) < 0)
		return;
	char ev[128];
	int done = now->state == FERRY_VM_PROTECTED;
	if (done) {
		rs.done_ns = ferry_now_ns();
		snprintf(ev, sizeof(ev), "resync %" PRIu64 " complete at segment %" PRIu64,
			 rs.epoch, now->marker_seq);
	} else
		snprintf(ev, sizeof(ev),
			 "resync %" PRIu64 ": the agent's chain resumed at segment %" PRIu64,
			 rs.epoch, now->applied_seq);
	int r = ferry_catalog_begin(c);
	if (r >= 0 && done)
		r = ferry_catalog_resync_set(c, &rs);
	if (r >= 0)
		r = ferry_catalog_event_add(c, now->id, "info", ev);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0)
		log_warning_errno(r, "VM %s: cannot record the resync's progress", now->name);
	log_info("VM %s: %s", now->name, ev);
	if (done)
		(void)ferry_control_delete_fps(cache, now->name, 0);
}
