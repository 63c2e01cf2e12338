/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One VM's replication pass: take its waiting segments from its cache in
 * sequence order, apply each (apply.c), acknowledge it and delete it. Used
 * by ferry-replicator, and by 'ferry failover' to apply what is left before
 * failing over to the latest processed state.
 *
 * While one segment is applied, a second thread already reads and prepares
 * (verifies, unpacks, hashes) the next one: the apply is then mostly
 * placing chunks, writing the pack and committing, and reading the cache
 * overlaps with the store's syncs. A third thread acknowledges applied
 * segments and deletes them from the cache (ack first, as cache.md says),
 * one ack for all that were applied since the last one.
 */
#include "replicate.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/util.h"

/* Records a refused segment on the VM so 'ferry status' shows it. */
static void mark_error(struct ferry_vault *v, const char *vm_name, const char *what)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	if (ferry_catalog_vm_get(c, vm_name, &vm) < 0)
		return;
	if (vm.state == FERRY_VM_ERROR && strcmp(vm.error, what) == 0)
		return;
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

/* One segment read and prepared ahead, or why it could not be. */
struct fetched {
	int r;
	int read_failed; /* r is from reading the cache, not from the segment */
	char msg[512];
	struct prepared_segment *p;
};

struct prefetcher {
	struct ferry_vault *v;
	struct ferry_cache *cache; /* its own handle: handles are not shared */
	const char *vm;
	const uint64_t *seqs; /* the segments to fetch, in order */
	size_t n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fetched item;
	int full; /* item holds a segment not yet taken */
	int quit;
};

static void *prefetch_main(void *arg)
{
	struct prefetcher *f = arg;
	for (size_t i = 0; i < f->n; i++) {
		struct fetched it = { 0 };
		void *buf;
		size_t len;
		it.r = ferry_cache_get_segment(f->cache, f->vm, f->seqs[i], &buf, &len);
		if (it.r < 0) {
			it.read_failed = 1;
		} else {
			it.r = apply_prepare(f->v, buf, len, &it.p, it.msg, sizeof(it.msg));
			free(buf);
		}
		pthread_mutex_lock(&f->lock);
		while (f->full && !f->quit)
			pthread_cond_wait(&f->cond, &f->lock);
		int quit = f->quit;
		if (!quit) {
			f->item = it;
			f->full = 1;
			pthread_cond_broadcast(&f->cond);
		}
		pthread_mutex_unlock(&f->lock);
		if (quit) {
			apply_prepared_free(it.p);
			break;
		}
		if (it.r < 0)
			break; /* the applier stops at this one */
	}
	return NULL;
}

/* The next prepared segment, in order. */
static struct fetched prefetch_take(struct prefetcher *f)
{
	pthread_mutex_lock(&f->lock);
	while (!f->full)
		pthread_cond_wait(&f->cond, &f->lock);
	struct fetched it = f->item;
	f->full = 0;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return it;
}

static void prefetch_stop(struct prefetcher *f, pthread_t tid)
{
	pthread_mutex_lock(&f->lock);
	f->quit = 1;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(tid, NULL);
	if (f->full)
		apply_prepared_free(f->item.p);
	f->full = 0;
}

struct acker {
	struct ferry_cache *cache; /* its own handle */
	const char *vm;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ferry_ack latest; /* newest applied, not yet acknowledged */
	int have_latest;
	uint64_t *del; /* applied segments waiting for an ack, then deletion */
	size_t ndel, adel;
	int done;
	int error; /* the first failure; the applier stops at it */
};

static void *acker_main(void *arg)
{
	struct acker *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->have_latest && !a->done)
			pthread_cond_wait(&a->cond, &a->lock);
		if (!a->have_latest)
			break;
		struct ferry_ack ack = a->latest;
		uint64_t *del = a->del;
		size_t ndel = a->ndel;
		a->have_latest = 0;
		a->del = NULL;
		a->ndel = a->adel = 0;
		pthread_mutex_unlock(&a->lock);

		int r = ferry_cache_put_ack(a->cache, a->vm, &ack);
		if (r < 0)
			log_error_errno(r, "VM %s: cannot acknowledge segment %llu", a->vm,
					(unsigned long long)ack.seq);
		for (size_t i = 0; r >= 0 && i < ndel; i++) {
			r = ferry_cache_delete_segment(a->cache, a->vm, del[i]);
			if (r < 0)
				log_error_errno(r, "VM %s: cannot delete applied segment %llu",
						a->vm, (unsigned long long)del[i]);
		}
		free(del);
		pthread_mutex_lock(&a->lock);
		if (r < 0) {
			a->error = r;
			break;
		}
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* Queues segment seq, applied; ack is the catalog's applied state after
 * it. Returns the acker's first failure, if any. */
static int acker_push(struct acker *a, const struct ferry_ack *ack, uint64_t seq)
{
	pthread_mutex_lock(&a->lock);
	int r = a->error;
	if (r >= 0 && a->ndel == a->adel) {
		size_t n = a->adel ? a->adel * 2 : 16;
		uint64_t *d = realloc(a->del, n * sizeof(*d));
		if (d) {
			a->del = d;
			a->adel = n;
		} else
			r = -ENOMEM;
	}
	if (r >= 0) {
		a->del[a->ndel++] = seq;
		a->latest = *ack;
		a->have_latest = 1;
		pthread_cond_broadcast(&a->cond);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* Waits until everything queued is acknowledged and deleted. */
static int acker_finish(struct acker *a, pthread_t tid)
{
	pthread_mutex_lock(&a->lock);
	a->done = 1;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	pthread_join(tid, NULL);
	free(a->del);
	return a->error;
}

int replicate_vm(struct ferry_vault *v, const struct ferry_vm *vm,
		 const volatile sig_atomic_t *stop)
{
	struct ferry_cache *cache;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r < 0) {
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

	uint64_t *seqs = NULL, bytes;
	size_t n = 0;
	r = ferry_cache_list_segments(cache, vm->name, &seqs, &n, &bytes);
	if (r < 0) {
		log_error_errno(r, "VM %s: cannot list segments in %s", vm->name, vm->cache_url);
		goto out;
	}

	/* Segments come sorted: the ones to apply follow those applied before. */
	size_t first = 0;
	while (first < n && seqs[first] <= vm->applied_seq)
		first++;
	struct prefetcher f = {
		.v = v,
		.vm = vm->name,
		.seqs = seqs + first,
		.n = n - first,
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.cond = PTHREAD_COND_INITIALIZER,
	};
	pthread_t tid, ack_tid;
	int prefetching = 0, acking = 0;
	if (f.n > 0 && ferry_cache_open(vm->cache_url, 0, &f.cache) >= 0) {
		prefetching = pthread_create(&tid, NULL, prefetch_main, &f) == 0;
		if (!prefetching)
			f.cache = ferry_cache_free(f.cache);
	}
	struct acker ak = {
		.vm = vm->name,
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.cond = PTHREAD_COND_INITIALIZER,
	};
	if (f.n > 0 && ferry_cache_open(vm->cache_url, 0, &ak.cache) >= 0) {
		acking = pthread_create(&ack_tid, NULL, acker_main, &ak) == 0;
		if (!acking)
			ak.cache = ferry_cache_free(ak.cache);
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

		struct fetched it = { 0 };
		if (prefetching) {
			it = prefetch_take(&f);
		} else {
			void *buf;
			size_t len;
			it.r = ferry_cache_get_segment(cache, vm->name, seqs[i], &buf, &len);
			it.read_failed = it.r < 0;
			if (it.r >= 0) {
				it.r = apply_prepare(v, buf, len, &it.p, it.msg, sizeof(it.msg));
				free(buf);
			}
		}
		if (it.read_failed) {
			r = it.r;
			log_error_errno(r, "VM %s: cannot read segment %s", vm->name, label);
			break;
		}
		struct apply_result res;
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", it.msg);
		r = it.r;
		if (r >= 0)
			r = apply_prepared(v, vm->name, seqs[i], it.p, &res, msg, sizeof(msg));
		apply_prepared_free(it.p);
		if (r < 0) {
			char what[sizeof(label) + sizeof(msg) + 32];
			snprintf(what, sizeof(what), "segment %s refused: %s", label, msg);
			log_error_errno(r, "VM %s: %s", vm->name, what);
			mark_error(v, vm->name, what);
			break;
		}

		/* The catalog holds the segment now: acknowledge, then delete.
		 * A crash between the steps repeats them harmlessly. */
		struct ferry_vm now;
		r = ferry_catalog_vm_get(ferry_vault_catalog(v), vm->name, &now);
		if (r >= 0) {
			ack = (struct ferry_ack){ now.applied_seq, now.applied_digest };
			if (acking) {
				r = acker_push(&ak, &ack, seqs[i]);
			} else {
				r = ferry_cache_put_ack(cache, vm->name, &ack);
				if (r >= 0)
					r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
			}
		}
		if (r < 0) {
			log_error_errno(r, "VM %s: cannot acknowledge segment %s", vm->name, label);
			break;
		}
		if (res.already_applied)
			log_info("VM %s: segment %llu was applied before; removed from the cache",
				 vm->name, (unsigned long long)res.seq);
		else {
			applied++;
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
	if (prefetching) {
		prefetch_stop(&f, tid);
		ferry_cache_free(f.cache);
	}
	if (acking) {
		int k = acker_finish(&ak, ack_tid);
		if (k < 0 && r >= 0)
			r = k;
		ferry_cache_free(ak.cache);
	}
	if (r >= 0)
		r = applied;
out:
	free(seqs);
	ferry_cache_free(cache);
	return r;
}
