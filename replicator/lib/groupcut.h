/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The barrier of a consistency group, agent side: the agents of a group's
 * VMs (one per VM, perhaps on different hosts) agree on one instant at
 * which every VM is paused, through records in the shared cache
 * (control.h), outbound only. Nobody leads: every agent writes only its
 * own records and decides from what all have written, so a member that is
 * down costs the round, never the other members' crash points.
 *
 * A round, for each agent (docs/architecture.md, "Consistency groups"):
 *  1. the views are made (the cut is ready to go); put READY; wait until
 *     every member is READY (at most prepare_timeout_ms), else skip;
 *  2. pause the VM (QMP stop); put PAUSED with the time; wait until every
 *     member is PAUSED (at most pause_limit_ms since this VM paused), else
 *     put ABORT, resume, skip;
 *  3. cut at T = the latest PAUSED time of all members (every VM was
 *     paused at T and has not run since: T names one state of all of
 *     them), resume, put CUT; the marker carries T and the round.
 * A member that sees another's ABORT gives up too. A member that cut while
 * another aborted leaves an incomplete round, which the target does not
 * list as a group point. Rounds are numbered by wall-clock time (the
 * current one is now / interval), so members meet without talking first;
 * their clocks must agree to well under the interval (NTP).
 */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct ferry_cache;

struct groupcut_params {
	const char *group;
	const char *vm;
	struct ferry_cache *cache;
	uint64_t interval_s;    /* between rounds; > 0 */
	int prepare_timeout_ms; /* 0: 10 s */
	int pause_limit_ms;     /* 0: 2 s */
	int poll_ms;            /* 0: 20 ms for a local cache, 100 ms otherwise */
	const volatile sig_atomic_t *stop;
};

/* The round due at now (> 0). */
uint64_t groupcut_round(const struct groupcut_params *p, int64_t now_ns);
/* When round begins. */
int64_t groupcut_round_start_ns(const struct groupcut_params *p, uint64_t round);

/* Records the VM as a member of its group (idempotent). */
int groupcut_join(const struct groupcut_params *p);

/*
 * Step 1. Returns 0 when every member is ready; -EAGAIN when the round is
 * skipped (a member not ready in time, or an ABORT seen; why says which,
 * and an ABORT of ours was put), another -errno on a cache error.
 */
int groupcut_ready(const struct groupcut_params *p, uint64_t round, char *why, size_t why_size);

/*
 * Step 2, called as soon as the VM is paused, at paused_ns (wall clock, for
 * the round's instant). Returns 0 and the round's instant in *ret_t when
 * every member is paused; -EAGAIN (why filled, ABORT put) when the pause
 * limit passed or another member aborted: the caller resumes at once and
 * skips the round.
 */
int groupcut_paused(const struct groupcut_params *p, uint64_t round, int64_t paused_ns,
		    int64_t *ret_t, char *why, size_t why_size);

/* Step 3, after the cut and the resume; also drops this VM's records of
 * rounds before this one. Best effort: failures are logged. */
void groupcut_done(const struct groupcut_params *p, uint64_t round);

/* Gives up round (puts ABORT with why), best effort. */
void groupcut_abort(const struct groupcut_params *p, uint64_t round, const char *why);
