/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry of open clones (registry.h): a table of the clones open in
 * this mount with a count of their users (open files, and a flush in the
 * background while it runs), a table of the last flush times of clones that
 * left it, and the background thread that sweeps the table. Flushes and
 * opens of clones run outside the registry's lock, holding a user, so one
 * slow flush never blocks opens or other flushes.
 */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "array.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/vault.h"

/* The background thread wakes every second to notice failovers that went
 * away, and flushes dirty clones every FLUSH_TICKS wake-ups. */
#define FLUSH_TICKS 5

/* An open clone and how many users (open files, a flush in the background)
 * hold it. */
struct creg {
	struct clone *c;
	unsigned users;
};

/* When a clone that left the registry was last flushed: its files' mtime. */
struct cmtime {
	int64_t failover_id;
	uint16_t idx;
	int64_t ns;
};

struct registry {
	struct fs *fs; /* the mount served: its vaults, chunk cache and snapshot slot */
	/* Guards clones and mtimes; taken before the vault lock, never inside it. */
	pthread_mutex_t lock;
	struct creg *clones;
	size_t nclones;
	struct cmtime *mtimes;
	size_t nmtimes;

	/* The background thread. */
	pthread_mutex_t bg_lock;
	pthread_cond_t bg_cond;
	pthread_t bg_thread;
	int bg_running;
	int bg_stop;
};

int registry_new(struct fs *fs, struct registry **ret)
{
	struct registry *reg = malloc(sizeof(*reg));

	if (!reg)
		return -ENOMEM;
	*reg = (struct registry){
		.fs = fs,
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.bg_lock = PTHREAD_MUTEX_INITIALIZER,
		.bg_cond = PTHREAD_COND_INITIALIZER,
	};
	*ret = reg;
	return 0;
}

static struct creg *reg_find(struct registry *reg, int64_t failover_id, uint16_t idx)
{
	for (size_t i = 0; i < reg->nclones; i++)
		if (clone_failover_id(reg->clones[i].c) == failover_id &&
		    clone_idx(reg->clones[i].c) == idx)
			return &reg->clones[i];
	return NULL;
}

static void mtime_note(struct registry *reg, int64_t failover_id, uint16_t idx, int64_t ns)
{
	struct cmtime *m;

	if (ns <= 0)
		return;
	for (size_t i = 0; i < reg->nmtimes; i++)
		if (reg->mtimes[i].failover_id == failover_id && reg->mtimes[i].idx == idx) {
			reg->mtimes[i].ns = ns;
			return;
		}
	m = grow(&reg->mtimes, &reg->nmtimes, sizeof(*m));
	if (m)
		*m = (struct cmtime){ failover_id, idx, ns };
}

int64_t registry_mtime(struct registry *reg, int64_t failover_id, uint16_t idx)
{
	int64_t t = 0;
	struct creg *e;

	pthread_mutex_lock(&reg->lock);
	e = reg_find(reg, failover_id, idx);
	if (e)
		t = clone_mtime(e->c);
	for (size_t i = 0; t == 0 && i < reg->nmtimes; i++)
		if (reg->mtimes[i].failover_id == failover_id && reg->mtimes[i].idx == idx)
			t = reg->mtimes[i].ns;
	pthread_mutex_unlock(&reg->lock);
	return t;
}

struct row_find {
	uint16_t idx;
	int found;
	struct ferry_clone_disk d;
};

static int row_find_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct row_find *rf = userdata;

	if (d->idx == rf->idx) {
		rf->d = *d;
		rf->found = 1;
	}
	return 0;
}

int registry_open(struct registry *reg, const struct snap_vm *v, const struct snap_failover *fo,
		  const struct ferry_clone_disk *d, struct clone **ret)
{
	struct row_find rf = { .idx = d->idx };
	char label[3 * FERRY_NAME_MAX + 3];
	struct clone *c = NULL;
	struct creg *e;
	int r;

	pthread_mutex_lock(&reg->lock);
	e = reg_find(reg, fo->f.id, d->idx);
	if (e) {
		e->users++;
		*ret = e->c;
		pthread_mutex_unlock(&reg->lock);
		return 0;
	}
	ferry_vault_lock(reg->fs->vault);
	r = ferry_catalog_clone_disks(ferry_vault_catalog(reg->fs->vault), fo->f.id, row_find_cb,
				      &rf);
	ferry_vault_unlock(reg->fs->vault);
	if (r >= 0 && !rf.found)
		r = -ENOENT;
	snprintf(label, sizeof(label), "%s/%s/%s", v->vm.name, fo->f.name, d->name);
	if (r >= 0)
		r = clone_new(reg->fs->cache, reg->fs->wvault, &rf.d, label, &c);
	if (r >= 0) {
		e = grow(&reg->clones, &reg->nclones, sizeof(*e));
		if (!e) {
			clone_free(c);
			r = -ENOMEM;
		} else {
			e->c = c;
			e->users = 1;
			*ret = c;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	return r;
}

void registry_close(struct registry *reg, struct clone *c)
{
	struct clone *gone = NULL;

	pthread_mutex_lock(&reg->lock);
	for (size_t i = 0; i < reg->nclones; i++) {
		struct creg *e = &reg->clones[i];

		if (e->c != c)
			continue;
		assert(e->users > 0);
		if (--e->users == 0 && clone_dirty_bytes(c) == 0) {
			mtime_note(reg, clone_failover_id(c), clone_idx(c), clone_mtime(c));
			gone = c;
			reg->clones[i] = reg->clones[--reg->nclones];
		}
		break;
	}
	pthread_mutex_unlock(&reg->lock);
	clone_free(gone);
}

/*
 * One pass of the background flusher: clones of failovers that left the
 * catalog are discarded (their open files fail from now on), and with
 * flush set every dirty clone is flushed. Also the final flush at unmount.
 */
static void reg_sweep(struct registry *reg, struct snap *s, int flush)
{
	for (size_t i = 0;; i++) {
		struct clone *c = NULL;

		pthread_mutex_lock(&reg->lock);
		for (; i < reg->nclones; i++) {
			struct creg *e = &reg->clones[i];

			if (s && !snap_failover_by_id(s, clone_failover_id(e->c), NULL)) {
				clone_discard(e->c, -ENOENT);
				if (e->users == 0) {
					clone_free(e->c);
					reg->clones[i--] = reg->clones[--reg->nclones];
				}
				continue;
			}
			if (flush && clone_dirty_bytes(e->c) > 0) {
				e->users++;
				c = e->c;
				break;
			}
		}
		pthread_mutex_unlock(&reg->lock);
		if (!c)
			return;
		(void)clone_flush(c); /* logs its own failure; retried next time */
		/* registry_close may move the last entry into slot i: that one waits
		 * for the next pass. */
		registry_close(reg, c);
	}
}

static void *bg_main(void *userdata)
{
	struct registry *reg = userdata;
	unsigned tick = 0;

	pthread_mutex_lock(&reg->bg_lock);
	while (!reg->bg_stop) {
		struct timespec ts;
		struct snap *s = NULL;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&reg->bg_cond, &reg->bg_lock, &ts);
		if (reg->bg_stop)
			break;
		pthread_mutex_unlock(&reg->bg_lock);
		if (snap_get(reg->fs->vault, &reg->fs->snap, &s) < 0)
			s = NULL;
		reg_sweep(reg, s, ++tick % FLUSH_TICKS == 0);
		snap_unref(s);
		pthread_mutex_lock(&reg->bg_lock);
	}
	pthread_mutex_unlock(&reg->bg_lock);
	return NULL;
}

static void bg_stop(struct registry *reg)
{
	if (!reg->bg_running)
		return;
	pthread_mutex_lock(&reg->bg_lock);
	reg->bg_stop = 1;
	pthread_cond_signal(&reg->bg_cond);
	pthread_mutex_unlock(&reg->bg_lock);
	pthread_join(reg->bg_thread, NULL);
	reg->bg_running = 0;
}

int registry_flush_failover(struct registry *reg, int64_t failover_id)
{
	int r = 0;

	for (size_t i = 0;; i++) {
		struct clone *c = NULL;
		int k;

		pthread_mutex_lock(&reg->lock);
		for (; i < reg->nclones; i++)
			if (clone_failover_id(reg->clones[i].c) == failover_id) {
				reg->clones[i].users++;
				c = reg->clones[i].c;
				break;
			}
		pthread_mutex_unlock(&reg->lock);
		if (!c)
			break;
		k = clone_flush(c);
		if (k < 0 && r >= 0)
			r = k;
		registry_close(reg, c);
	}
	return r;
}

int registry_start(struct registry *reg)
{
	int r;

	if (reg->bg_running)
		return 0;
	r = pthread_create(&reg->bg_thread, NULL, bg_main, reg);
	if (r != 0)
		return -r;
	reg->bg_running = 1;
	return 0;
}

void registry_stop(struct registry *reg)
{
	if (!reg)
		return;
	bg_stop(reg);
	reg_sweep(reg, NULL, 1);
}

struct registry *registry_free(struct registry *reg)
{
	if (!reg)
		return NULL;
	bg_stop(reg);
	for (size_t i = 0; i < reg->nclones; i++)
		clone_free(reg->clones[i].c);
	free(reg->clones);
	free(reg->mtimes);
	free(reg);
	return NULL;
}
