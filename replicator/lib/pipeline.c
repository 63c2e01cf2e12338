/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The prefetcher and the acker of a replication pass (see pipeline.h).
 * Each is one thread with one slot or list under one lock.
 */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/changelog.h"
#include "ferry/log.h"

/* What both have: a thread, its own cache handle, and a lock and condition
 * over the rest of their state. */
struct helper {
	pthread_t thread;
	struct ferry_cache *cache;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static int helper_start(struct helper *h, const char *cache_url, void *(*fn)(void *), void *arg)
{
	int r = ferry_cache_open(cache_url, 0, &h->cache);
	if (r < 0)
		return r;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	r = -pthread_create(&h->thread, NULL, fn, arg);
	if (r < 0) {
		ferry_cache_free(h->cache);
		pthread_mutex_destroy(&h->lock);
		pthread_cond_destroy(&h->cond);
	}
	return r;
}

/* Sets *flag (under the lock) to tell the thread to end, and waits for it. */
static void helper_stop(struct helper *h, int *flag)
{
	pthread_mutex_lock(&h->lock);
	*flag = 1;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	ferry_cache_free(h->cache);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
}

struct prefetcher {
	struct helper h;
	struct ferry_vault *v;
	const char *vm;
	const uint64_t *seqs; /* the segments to fetch, in order */
	size_t n;
	struct fetched item;
	int full; /* item holds a segment not yet taken */
	int quit;
};

struct fetched fetch_segment(struct ferry_vault *v, struct ferry_cache *cache, const char *vm,
			     uint64_t seq)
{
	struct fetched it = { 0 };
	void *buf;
	size_t len;
	it.r = ferry_cache_get_segment(cache, vm, seq, &buf, &len);
	if (it.r == -EFBIG) {
		/* Refused like a damaged segment, and recorded on the VM. */
		snprintf(it.msg, sizeof(it.msg),
			 "larger than any segment can be (%u bytes): not a segment, or damaged",
			 FERRY_SEGMENT_MAX_SIZE);
	} else if (it.r < 0) {
		it.read_failed = 1;
	} else {
		it.r = apply_prepare(v, buf, len, &it.p, it.msg, sizeof(it.msg));
		free(buf);
	}
	return it;
}

static void *prefetch_main(void *arg)
{
	struct prefetcher *f = arg;
	for (size_t i = 0; i < f->n; i++) {
		struct fetched it = fetch_segment(f->v, f->h.cache, f->vm, f->seqs[i]);
		pthread_mutex_lock(&f->h.lock);
		while (f->full && !f->quit)
			pthread_cond_wait(&f->h.cond, &f->h.lock);
		int quit = f->quit;
		if (!quit) {
			f->item = it;
			f->full = 1;
			pthread_cond_broadcast(&f->h.cond);
		}
		pthread_mutex_unlock(&f->h.lock);
		if (quit) {
			apply_prepared_free(it.p);
			break;
		}
		if (it.r < 0)
			break; /* the applier stops at this one */
	}
	return NULL;
}

struct fetched prefetcher_take(struct prefetcher *f)
{
	pthread_mutex_lock(&f->h.lock);
	while (!f->full)
		pthread_cond_wait(&f->h.cond, &f->h.lock);
	struct fetched it = f->item;
	f->full = 0;
	pthread_cond_broadcast(&f->h.cond);
	pthread_mutex_unlock(&f->h.lock);
	return it;
}

void prefetcher_stop(struct prefetcher *f)
{
	if (!f)
		return;
	helper_stop(&f->h, &f->quit);
	if (f->full)
		apply_prepared_free(f->item.p);
	free(f);
}

int prefetcher_start(struct ferry_vault *v, const char *cache_url, const char *vm,
		     const uint64_t *seqs, size_t n, struct prefetcher **ret)
{
	struct prefetcher *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct prefetcher){ .v = v, .vm = vm, .seqs = seqs, .n = n };
	int r = helper_start(&f->h, cache_url, prefetch_main, f);
	if (r < 0) {
		free(f);
		return r;
	}
	*ret = f;
	return 0;
}

struct acker {
	struct helper h;
	const char *vm;
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
	pthread_mutex_lock(&a->h.lock);
	for (;;) {
		while (!a->have_latest && !a->done)
			pthread_cond_wait(&a->h.cond, &a->h.lock);
		if (!a->have_latest)
			break;
		struct ferry_ack ack = a->latest;
		uint64_t *del = a->del;
		size_t ndel = a->ndel;
		a->have_latest = 0;
		a->del = NULL;
		a->ndel = a->adel = 0;
		pthread_mutex_unlock(&a->h.lock);

		int r = ferry_cache_put_ack(a->h.cache, a->vm, &ack);
		if (r < 0)
			log_error_errno(r, "VM %s: cannot acknowledge segment %llu", a->vm,
					(unsigned long long)ack.seq);
		for (size_t i = 0; r >= 0 && i < ndel; i++) {
			r = ferry_cache_delete_segment(a->h.cache, a->vm, del[i]);
			if (r < 0)
				log_error_errno(r, "VM %s: cannot delete applied segment %llu",
						a->vm, (unsigned long long)del[i]);
		}
		free(del);
		pthread_mutex_lock(&a->h.lock);
		if (r < 0) {
			a->error = r;
			break;
		}
	}
	pthread_mutex_unlock(&a->h.lock);
	return NULL;
}

int acker_push(struct acker *a, const struct ferry_ack *ack, uint64_t seq)
{
	pthread_mutex_lock(&a->h.lock);
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
		pthread_cond_broadcast(&a->h.cond);
	}
	pthread_mutex_unlock(&a->h.lock);
	return r;
}

int acker_start(const char *cache_url, const char *vm, struct acker **ret)
{
	struct acker *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->vm = vm;
	int r = helper_start(&a->h, cache_url, acker_main, a);
	if (r < 0) {
		free(a);
		return r;
	}
	*ret = a;
	return 0;
}

int acker_finish(struct acker *a)
{
	helper_stop(&a->h, &a->done);
	int r = a->error;
	free(a->del);
	free(a);
	return r;
}
