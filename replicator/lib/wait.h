/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Waiting for segments between two passes of ferry-replicator, so that a
 * segment is applied about a second after it arrives instead of at the next
 * --interval. A cache in a local directory is watched with inotify: the
 * cache directory (for segments/ to appear), segments/ (for a VM's
 * directory to appear) and segments/<vm>/ (for a segment to be renamed into
 * place). A cache on object storage is polled: one listing of the VM's
 * segments per poll. A local cache that cannot be watched (no inotify, the
 * watch limit reached) is polled too. The core never waits: this is the
 * replicator's policy, kept here so that the program stays a thin main.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/catalog.h"

struct waiter;

enum {
	WAITER_TIMEOUT = 0, /* the deadline passed */
	WAITER_ARRIVED = 1, /* a segment arrived, or may have: run a pass */
	WAITER_WOKEN = 2,   /* waiter_wake() was called */
};

/* poll_ns: the time between two listings of a polled cache. */
int waiter_new(int64_t poll_ns, struct waiter **ret);
struct waiter *waiter_free(struct waiter *w);

/* Makes the waiter_wait at hand, or the next one, return WAITER_WOKEN.
 * Async-signal-safe and callable from any thread: for signal handlers and
 * for a thread that decided the program must stop. */
void waiter_wake(struct waiter *w);

/*
 * Sets the VMs to wait for (vms[i].name, .cache_url, .applied_seq),
 * replacing the previous set. Call it before each pass: a segment that
 * arrives after this call wakes the next waiter_wait, one that arrived
 * before it is the pass's to see, so nothing falls in between. A polled
 * cache wakes the waiter when it lists a seq above both the VM's applied
 * seq and every seq listed before, so a refused segment left in the cache
 * does not start a pass at every poll. A cache that cannot be opened (not
 * created yet: the agent makes it with its first put) is polled, each poll
 * trying to open it. Returns 0, or -ENOMEM.
 */
int waiter_track(struct waiter *w, const struct ferry_vm *vms, size_t n);

/* Waits until something arrives for a tracked VM, waiter_wake, or the
 * CLOCK_MONOTONIC deadline (ferry_mono_ns()), whichever comes first. */
int waiter_wait(struct waiter *w, int64_t deadline_ns);
