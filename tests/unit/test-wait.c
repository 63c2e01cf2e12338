/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The replicator's wait between passes (replicator/lib/wait.h) on local
 * caches: a segment put into a watched cache wakes it, from an empty cache
 * directory (segments/ and the VM's directory appear first) and from a
 * watched VM directory; what the replicator itself does there (deleting
 * segments, putting acks and statuses) does not; waiter_wake does, from
 * another thread; a cache that does not exist yet is polled and wakes it
 * once the agent has made it and put a segment, and a segment that stays
 * (refused) does not wake it at every poll. Waits that must time out use
 * short deadlines; waits that must wake use long ones and return early.
 */
#include "wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/cache.h"
#include "ferry/util.h"
#include "tap.h"

#define MS 1000000LL

static char tmpdir[] = "/tmp/test-wait-XXXXXX";

static int64_t after(int64_t ms)
{
	return ferry_mono_ns() + ms * MS;
}

static struct ferry_vm vm_at(const char *name, const char *url, uint64_t applied)
{
	struct ferry_vm vm = { .applied_seq = applied };
	snprintf(vm.name, sizeof(vm.name), "%s", name);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s", url);
	return vm;
}

static void *wake_later(void *w)
{
	usleep(50000);
	waiter_wake(w);
	return NULL;
}

static void test_watched(void)
{
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s/cache", tmpdir) < 0)
		abort();
	struct ferry_cache *c;
	if (ferry_cache_open(url, 1, &c) < 0)
		abort();
	ok(ferry_cache_local_dir(c) != NULL, "a local cache has a directory");

	struct waiter *w;
	ok_r(waiter_new(100 * MS, &w), "waiter");
	struct ferry_vm vm = vm_at("vm1", url, 0);
	ok_r(waiter_track(w, &vm, 1), "track a cache without segments/");
	ok(waiter_wait(w, after(100)) == WAITER_TIMEOUT, "nothing arrived: timeout");

	ok_r(ferry_cache_put_segment(c, "vm1", 1, "one", 3), "first put makes segments/vm1/");
	int64_t t0 = ferry_mono_ns();
	ok(waiter_wait(w, after(10000)) == WAITER_ARRIVED, "the first segment wakes the wait");
	ok(ferry_mono_ns() - t0 < 5000 * MS, "long before the deadline");

	/* As the replicator does: track, then the pass, then wait. */
	ok_r(waiter_track(w, &vm, 1), "track again, now with segments/vm1/");
	ok(waiter_wait(w, after(100)) == WAITER_TIMEOUT, "no new segment: timeout");
	ok_r(ferry_cache_put_segment(c, "vm1", 2, "two", 3), "put segment 2");
	ok(waiter_wait(w, after(10000)) == WAITER_ARRIVED, "segment 2 wakes the wait");

	ok_r(ferry_cache_put_ack(c, "vm1", &(struct ferry_ack){ 0 }), "put an ack");
	ok_r(ferry_cache_delete_segment(c, "vm1", 1), "delete segment 1");
	struct ferry_agent_status st = { .tracker = FERRY_TRACKER_SCAN };
	ok_r(ferry_cache_put_status(c, "vm1", &st), "put a status");
	ok(waiter_wait(w, after(200)) == WAITER_TIMEOUT,
	   "acks, statuses and deletions do not wake it");

	/* Another VM's directory in the same cache counts: its pass takes it. */
	ok_r(ferry_cache_put_segment(c, "vm2", 1, "x", 1), "a new VM's first segment");
	ok(waiter_wait(w, after(10000)) == WAITER_ARRIVED, "a new VM directory wakes the wait");

	pthread_t t;
	pthread_create(&t, NULL, wake_later, w);
	ok(waiter_wait(w, after(10000)) == WAITER_WOKEN, "waiter_wake from another thread");
	pthread_join(t, NULL);
	waiter_wake(w);
	ok(waiter_wait(w, after(10000)) == WAITER_WOKEN, "a wake before the wait is kept");
	ok(waiter_wait(w, after(50)) == WAITER_TIMEOUT, "and used up");

	ok_r(waiter_track(w, NULL, 0), "track nothing");
	ok_r(ferry_cache_put_segment(c, "vm1", 3, "three", 5), "put into an untracked cache");
	ok(waiter_wait(w, after(200)) == WAITER_TIMEOUT, "an untracked cache does not wake it");
	waiter_free(w);
	ferry_cache_free(c);
}

static void test_polled(void)
{
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s/later", tmpdir) < 0)
		abort();
	struct waiter *w;
	ok_r(waiter_new(50 * MS, &w), "waiter polling every 50 ms");
	struct ferry_vm vm = vm_at("vm1", url, 4);
	ok_r(waiter_track(w, &vm, 1), "track a cache that does not exist yet");
	ok(waiter_wait(w, after(200)) == WAITER_TIMEOUT, "nothing there: timeout");

	struct ferry_cache *c;
	if (ferry_cache_open(url, 1, &c) < 0)
		abort();
	ok_r(ferry_cache_put_segment(c, "vm1", 4, "old", 3), "an applied segment left over");
	ok(waiter_wait(w, after(200)) == WAITER_TIMEOUT, "an applied seq does not wake it");
	ok_r(ferry_cache_put_segment(c, "vm1", 5, "new", 3), "a new segment");
	ok(waiter_wait(w, after(10000)) == WAITER_ARRIVED, "the poll finds it");
	ok(waiter_wait(w, after(200)) == WAITER_TIMEOUT,
	   "the same segment, still there (refused), does not wake it again");
	ok_r(ferry_cache_put_segment(c, "vm1", 6, "next", 4), "the next segment");
	ok(waiter_wait(w, after(10000)) == WAITER_ARRIVED, "wakes it");
	waiter_free(w);
	ferry_cache_free(c);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot make a temporary directory\n");
		return 77;
	}
	test_watched();
	test_polled();
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "rm -rf '%s'", tmpdir) < 0 || system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", tmpdir);
	return tap_done();
}
