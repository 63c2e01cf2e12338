/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The prefetcher and the acker of a replication pass (see pipeline.h).
 * Each is one thread with one slot or list under one lock.
 */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "ferry/log.h"

struct prefetcher {
	pthread_t thread;
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

struct fetched prefetcher_take(struct prefetcher *f)
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

void prefetcher_stop(struct prefetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->quit = 1;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	if (f->full)
		apply_prepared_free(f->item.p);
	ferry_cache_free(f->cache);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
}

int prefetcher_start(struct ferry_vault *v, const char *cache_url, const char *vm,
		     const uint64_t *seqs, size_t n, struct prefetcher **ret)
{
	struct prefetcher *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct prefetcher){ .v = v, .vm = vm, .seqs = seqs, .n = n };
	int r = ferry_cache_open(cache_url, 0, &f->cache);
	if (r < 0) {
		free(f);
		return r;
	}
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	r = -pthread_create(&f->thread, NULL, prefetch_main, f);
	if (r < 0) {
		ferry_cache_free(f->cache);
		pthread_mutex_destroy(&f->lock);
		pthread_cond_destroy(&f->cond);
		free(f);
		return r;
	}
	*ret = f;
	return 0;
}

struct acker {
	pthread_t thread;
	struct ferry_cache *cache;
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

int acker_push(struct acker *a, const struct ferry_ack *ack, uint64_t seq)
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

int acker_start(const char *cache_url, const char *vm, struct acker **ret)
{
	struct acker *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->vm = vm;
	int r = ferry_cache_open(cache_url, 0, &a->cache);
	if (r < 0) {
		free(a);
		return r;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	r = -pthread_create(&a->thread, NULL, acker_main, a);
	if (r < 0) {
		ferry_cache_free(a->cache);
		pthread_mutex_destroy(&a->lock);
		pthread_cond_destroy(&a->cond);
		free(a);
		return r;
	}
	*ret = a;
	return 0;
}

int acker_finish(struct acker *a)
{
	pthread_mutex_lock(&a->lock);
	a->done = 1;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	int r = a->error;
	free(a->del);
	ferry_cache_free(a->cache);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
	return r;
}
