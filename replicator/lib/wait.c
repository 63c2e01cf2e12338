/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The replicator's wait between passes (wait.h). The local cache backend
 * puts a blob by writing a hidden temporary file and renaming it into
 * place (or, where the file system has no no-replace rename, linking it and
 * removing the temporary): a segment is complete once its name appears by
 * IN_MOVED_TO, or once a hidden name is deleted beside it. A name closed
 * after writing (IN_CLOSE_WRITE) is someone copying a segment in by hand.
 * Events that cannot be told apart from an arrival (a lost queue, a watched
 * directory gone) count as one: the worst a false alarm costs is a pass
 * that finds nothing.
 */
#include "wait.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "ferry/cache.h"
#include "ferry/log.h"
#include "ferry/util.h"

enum watch_kind {
	W_ROOT,     /* the cache directory: segments/ may appear */
	W_SEGMENTS, /* segments/: a VM's directory may appear */
	W_VM,       /* segments/<vm>/: segments arrive */
};

struct watch {
	int wd;
	enum watch_kind kind;
	int used;
};

struct polled {
	char *name, *url;
	struct ferry_cache *cache;
	uint64_t seen; /* the highest seq applied or listed so far */
	int used;
};

struct waiter {
	int ifd; /* inotify; -1 where there is none: everything is polled */
	int wake[2];
	int64_t poll_ns, next_poll;
	struct watch *watches;
	size_t nwatches;
	struct polled *polled;
	size_t npolled;
	int warned;
};

int waiter_new(int64_t poll_ns, struct waiter **ret)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->poll_ns = poll_ns > 0 ? poll_ns : 1000000000;
	if (pipe2(w->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd < 0)
		log_warning_errno(-errno, "no inotify: local caches are polled every %.1f s",
				  (double)w->poll_ns / 1e9);
	*ret = w;
	return 0;
}

static void polled_clear(struct polled *p)
{
	free(p->name);
	free(p->url);
	ferry_cache_free(p->cache);
	*p = (struct polled){ 0 };
}

struct waiter *waiter_free(struct waiter *w)
{
	if (!w)
		return NULL;
	for (size_t i = 0; i < w->npolled; i++)
		polled_clear(&w->polled[i]);
	free(w->polled);
	free(w->watches);
	if (w->ifd >= 0)
		close(w->ifd);
	close(w->wake[0]);
	close(w->wake[1]);
	free(w);
	return NULL;
}

void waiter_wake(struct waiter *w)
{
	int saved = errno;
	/* A full pipe already says it. */
	(void)!write(w->wake[1], "x", 1);
	errno = saved;
}

static struct watch *watch_find(struct waiter *w, int wd)
{
	for (size_t i = 0; i < w->nwatches; i++)
		if (w->watches[i].wd == wd)
			return &w->watches[i];
	return NULL;
}

/* 0 watched, -ENOENT not there (its parent's watch sees it come), another
 * -errno when it cannot be watched. */
static int watch_dir(struct waiter *w, const char *path, enum watch_kind kind)
{
	uint32_t mask = kind == W_VM ? IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE :
				       IN_CREATE | IN_MOVED_TO;
	int wd = inotify_add_watch(w->ifd, path, mask | IN_ONLYDIR);
	if (wd < 0)
		return -errno;
	struct watch *x = watch_find(w, wd);
	if (!x) {
		x = realloc(w->watches, (w->nwatches + 1) * sizeof(*x));
		if (!x) {
			inotify_rm_watch(w->ifd, wd);
			return -ENOMEM;
		}
		w->watches = x;
		x = &w->watches[w->nwatches++];
		x->wd = wd;
	}
	x->kind = kind;
	x->used = 1;
	return 0;
}

/* Watches dir, dir/segments and dir/segments/<vm>; 0, or -errno when one
 * that exists cannot be watched. */
static int watch_cache(struct waiter *w, const char *dir, const char *vm)
{
	_cleanup_free_ char *seg = NULL, *vmdir = NULL;
	if (asprintf(&seg, "%s/segments", dir) < 0 ||
	    asprintf(&vmdir, "%s/segments/%s", dir, vm) < 0)
		return -ENOMEM;
	const char *paths[] = { dir, seg, vmdir };
	const enum watch_kind kinds[] = { W_ROOT, W_SEGMENTS, W_VM };
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		int r = watch_dir(w, paths[i], kinds[i]);
		if (r == -ENOENT && i > 0)
			return 0; /* the one above sees it appear */
		if (r < 0)
			return r;
	}
	return 0;
}

static struct polled *polled_find(struct waiter *w, const char *name, const char *url)
{
	for (size_t i = 0; i < w->npolled; i++)
		if (strcmp(w->polled[i].name, name) == 0 && strcmp(w->polled[i].url, url) == 0)
			return &w->polled[i];
	return NULL;
}

/* Keeps c open for polling (a remote cache's open costs a request); NULL
 * for one that could not be opened yet. */
static int polled_add(struct waiter *w, const struct ferry_vm *vm, struct ferry_cache *c,
		      uint64_t seen)
{
	struct polled *p = realloc(w->polled, (w->npolled + 1) * sizeof(*p));
	if (!p) {
		ferry_cache_free(c);
		return -ENOMEM;
	}
	w->polled = p;
	p = &w->polled[w->npolled];
	*p = (struct polled){ .name = strdup(vm->name),
			      .url = strdup(vm->cache_url),
			      .cache = c,
			      .seen = seen,
			      .used = 1 };
	if (!p->name || !p->url) {
		polled_clear(p);
		return -ENOMEM;
	}
	w->npolled++;
	return 0;
}

static int track_one(struct waiter *w, const struct ferry_vm *vm)
{
	uint64_t seen = vm->applied_seq;
	struct polled *p = polled_find(w, vm->name, vm->cache_url);
	if (p) {
		seen = MAX(seen, p->seen);
		/* Object storage stays polled, with its cache kept open. A
		 * local cache polled because it was missing or could not be
		 * watched is tried again: the entry goes at the sweep. */
		if (p->cache && !ferry_cache_local_dir(p->cache)) {
			p->used = 1;
			p->seen = seen;
			return 0;
		}
	}
	struct ferry_cache *c;
	int r = ferry_cache_open(vm->cache_url, 0, &c);
	if (r < 0) {
		/* Not there yet (the agent creates it with its first put), or
		 * out of reach: polled, each poll trying to open it again. */
		log_debug("VM %s: cache %s cannot be opened yet (%s); polling it", vm->name,
			  vm->cache_url, strerror(-r));
		return polled_add(w, vm, NULL, seen);
	}
	const char *dir = ferry_cache_local_dir(c);
	if (dir && w->ifd >= 0) {
		r = watch_cache(w, dir, vm->name);
		if (r >= 0) {
			ferry_cache_free(c);
			return 0;
		}
		if (r == -ENOMEM) {
			ferry_cache_free(c);
			return r;
		}
		if (!w->warned) {
			w->warned = 1;
			log_warning_errno(r,
					  "VM %s: cannot watch cache %s%s; polling it every %.1f s "
					  "instead",
					  vm->name, dir,
					  r == -ENOSPC ? " (the inotify watch limit, "
							 "fs.inotify.max_user_watches)" :
							 "",
					  (double)w->poll_ns / 1e9);
		}
	}
	return polled_add(w, vm, c, seen);
}

int waiter_track(struct waiter *w, const struct ferry_vm *vms, size_t n)
{
	for (size_t i = 0; i < w->nwatches; i++)
		w->watches[i].used = 0;
	for (size_t i = 0; i < w->npolled; i++)
		w->polled[i].used = 0;
	int r = 0;
	for (size_t i = 0; i < n && r >= 0; i++)
		r = track_one(w, &vms[i]);
	if (r < 0)
		return r;

	/* What no VM wants any more. Its IN_IGNORED then names a wd no
	 * longer known and is dropped. */
	size_t k = 0;
	for (size_t i = 0; i < w->nwatches; i++) {
		if (w->watches[i].used)
			w->watches[k++] = w->watches[i];
		else
			inotify_rm_watch(w->ifd, w->watches[i].wd);
	}
	w->nwatches = k;
	k = 0;
	for (size_t i = 0; i < w->npolled; i++) {
		if (w->polled[i].used)
			w->polled[k++] = w->polled[i];
		else
			polled_clear(&w->polled[i]);
	}
	w->npolled = k;
	w->next_poll = ferry_mono_ns() + w->poll_ns;
	return 0;
}

/* Whether one of the events waiting on the inotify fd is an arrival; reads
 * them all. */
static int read_events(struct waiter *w)
{
	int arrived = 0;
	for (;;) {
		char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
		ssize_t len = read(w->ifd, buf, sizeof(buf));
		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			return arrived;
		for (char *p = buf; p < buf + len;) {
			const struct inotify_event *e = (const struct inotify_event *)p;
			p += sizeof(*e) + e->len;
			const char *name = e->len ? e->name : "";
			if (e->mask & IN_Q_OVERFLOW) {
				arrived = 1;
				continue;
			}
			struct watch *x = watch_find(w, e->wd);
			if (!x)
				continue;
			if (e->mask & IN_IGNORED) {
				/* The directory went: its parent's watch, re-armed
				 * by the next waiter_track, sees it come back. */
				*x = w->watches[--w->nwatches];
				arrived = 1;
				continue;
			}
			int hit = 0;
			switch (x->kind) {
			case W_ROOT:
				hit = (e->mask & IN_ISDIR) && strcmp(name, "segments") == 0;
				break;
			case W_SEGMENTS:
				hit = !!(e->mask & IN_ISDIR);
				break;
			case W_VM:
				/* A segment renamed into place, or a temporary
				 * removed after its link() into place. */
				hit = name[0] != '.' ?
					      !!(e->mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) :
					      !!(e->mask & IN_DELETE);
				break;
			}
			if (hit && !arrived)
				log_debug("cache: %s appeared; a pass looks for segments", name);
			arrived |= hit;
		}
	}
}

static int wake_pending(struct waiter *w)
{
	struct pollfd pfd = { .fd = w->wake[0], .events = POLLIN };
	return poll(&pfd, 1, 0) > 0;
}

static int drain_wake(struct waiter *w)
{
	char buf[64];
	while (read(w->wake[0], buf, sizeof(buf)) > 0)
		;
	return WAITER_WOKEN;
}

/* Lists every polled cache; WAITER_ARRIVED when one shows a new seq. */
static int poll_caches(struct waiter *w)
{
	int arrived = 0;
	for (size_t i = 0; i < w->npolled; i++) {
		/* A listing may take a while (retries): a stop waits for none
		 * after it. */
		if (wake_pending(w))
			return WAITER_WOKEN;
		struct polled *p = &w->polled[i];
		uint64_t *seqs = NULL;
		size_t n = 0;
		int r = p->cache ? 0 : ferry_cache_open(p->url, 0, &p->cache);
		if (r >= 0)
			r = ferry_cache_list_segments(p->cache, p->name, &seqs, &n, NULL);
		if (r < 0) {
			log_debug("VM %s: cannot list cache %s: %s", p->name, p->url, strerror(-r));
			continue;
		}
		if (n > 0 && seqs[n - 1] > p->seen) {
			log_debug("VM %s: segment %llu waits in cache %s", p->name,
				  (unsigned long long)seqs[n - 1], p->url);
			p->seen = seqs[n - 1];
			arrived = 1;
		}
		free(seqs);
	}
	return arrived ? WAITER_ARRIVED : WAITER_TIMEOUT;
}

int waiter_wait(struct waiter *w, int64_t deadline_ns)
{
	for (;;) {
		int64_t now = ferry_mono_ns();
		if (now >= deadline_ns)
			return WAITER_TIMEOUT;
		int64_t until = deadline_ns;
		if (w->npolled)
			until = MIN(until, w->next_poll);
		int64_t ms = until > now ? (until - now + 999999) / 1000000 : 0;
		struct pollfd pfd[2] = {
			{ .fd = w->wake[0], .events = POLLIN },
			{ .fd = w->ifd, .events = POLLIN },
		};
		int r = poll(pfd, w->ifd >= 0 ? 2 : 1, (int)MIN(ms, (int64_t)INT_MAX));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0 && (pfd[0].revents & POLLIN))
			return drain_wake(w);
		if (r > 0 && (pfd[1].revents & POLLIN) && read_events(w))
			return WAITER_ARRIVED;
		if (w->npolled && ferry_mono_ns() >= w->next_poll) {
			w->next_poll = ferry_mono_ns() + w->poll_ns;
			r = poll_caches(w);
			if (r == WAITER_WOKEN)
				return drain_wake(w);
			if (r != WAITER_TIMEOUT)
				return r;
		}
	}
}
