/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's side of a consistency group's barrier (groupcut.h): polls the
 * group's records in the cache until every member has reached a step, within
 * a time limit. Only names are listed while waiting; the PAUSED records are
 * read once all are there, for their times.
 */
#include "groupcut.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/cache.h"
#include "ferry/control.h"
#include "ferry/log.h"
#include "ferry/util.h"

#define MAX_MEMBERS 4096

uint64_t groupcut_round(const struct groupcut_params *p, int64_t now_ns)
{
	return (uint64_t)(now_ns / 1000000000) / p->interval_s;
}

int64_t groupcut_round_start_ns(const struct groupcut_params *p, uint64_t round)
{
	return (int64_t)(round * p->interval_s) * 1000000000;
}

static int put(const struct groupcut_params *p, uint8_t step, uint64_t round, int64_t time_ns,
	       const char *reason)
{
	struct ferry_group_record g = { .step = step, .round = round, .time_ns = time_ns };
	snprintf(g.vm, sizeof(g.vm), "%s", p->vm);
	snprintf(g.reason, sizeof(g.reason), "%s", reason ? reason : "");
	return ferry_control_put_group(p->cache, p->group, &g);
}

int groupcut_join(const struct groupcut_params *p)
{
	int r = put(p, FERRY_GROUP_MEMBER, 0, ferry_now_ns(), NULL);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot record it as a member of group %s in %s",
				       p->vm, p->group, ferry_cache_url(p->cache));
	return 0;
}

/* ---- who has written what ---- */

struct member {
	char vm[65];
	uint8_t reached; /* the furthest step seen in this round; 0: none */
};

struct roster {
	struct member *m;
	size_t n;
	char aborted[65]; /* a member that gave up, "" if none */
	int self;         /* this VM is among the members */
};

static int note_member(const char *vm, uint8_t step, void *userdata)
{
	struct roster *rs = userdata;
	if (step != FERRY_GROUP_MEMBER)
		return 0;
	if (rs->n >= MAX_MEMBERS)
		return -E2BIG;
	struct member *v = realloc(rs->m, (rs->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	rs->m = v;
	memset(&v[rs->n], 0, sizeof(*v));
	snprintf(v[rs->n].vm, sizeof(v[rs->n].vm), "%s", vm);
	rs->n++;
	return 0;
}

static int note_self(struct roster *rs, const char *vm)
{
	for (size_t i = 0; i < rs->n; i++)
		if (strcmp(rs->m[i].vm, vm) == 0)
			rs->self = 1;
	return rs->self;
}

static int note_step(const char *vm, uint8_t step, void *userdata)
{
	struct roster *rs = userdata;
	if (step == FERRY_GROUP_ABORT) {
		if (!rs->aborted[0])
			snprintf(rs->aborted, sizeof(rs->aborted), "%s", vm);
		return 0;
	}
	for (size_t i = 0; i < rs->n; i++)
		if (strcmp(rs->m[i].vm, vm) == 0 && step > rs->m[i].reached)
			rs->m[i].reached = step;
	return 0;
}

/* Lists the members, then what each has reached in round. A member list
 * without this VM (its record lost) gets it back: a barrier that did not
 * wait for this VM's own steps would pass on nothing. */
static int roster_read(const struct groupcut_params *p, uint64_t round, struct roster *rs)
{
	free(rs->m);
	*rs = (struct roster){ 0 };
	int r = ferry_control_list_group(p->cache, p->group, 0, note_member, rs);
	if (r >= 0 && !note_self(rs, p->vm)) {
		r = groupcut_join(p);
		if (r >= 0)
			r = note_member(p->vm, FERRY_GROUP_MEMBER, rs);
	}
	if (r >= 0)
		r = ferry_control_list_group(p->cache, p->group, round, note_step, rs);
	return r;
}

static int poll_ms(const struct groupcut_params *p)
{
	if (p->poll_ms > 0)
		return p->poll_ms;
	return ferry_cache_local_dir(p->cache) ? 20 : 100;
}

static void nap(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/*
 * Waits until every member has reached step in round, until deadline_ns
 * (ferry_mono_ns).
 * Returns 0, or -EAGAIN with why filled: a member missing at the deadline
 * (the first one in name order is named), or one that aborted.
 */
static int wait_all(const struct groupcut_params *p, uint64_t round, uint8_t step,
		    int64_t deadline_ns, char *why, size_t why_size)
{
	struct roster rs = { 0 };
	int r;
	for (;;) {
		r = roster_read(p, round, &rs);
		if (r < 0) {
			snprintf(why, why_size, "cannot read the group's records: %s",
				 strerror(-r));
			break;
		}
		if (rs.aborted[0]) {
			snprintf(why, why_size, "member %s gave the round up", rs.aborted);
			r = -EAGAIN;
			break;
		}
		const char *missing = NULL;
		for (size_t i = 0; i < rs.n && !missing; i++)
			if (rs.m[i].reached < step)
				missing = rs.m[i].vm;
		if (!missing)
			break;
		if (ferry_mono_ns() >= deadline_ns || (p->stop && *p->stop)) {
			snprintf(why, why_size, "member %s was not %s in time", missing,
				 step == FERRY_GROUP_READY ? "ready" : "paused");
			r = -EAGAIN;
			break;
		}
		nap(poll_ms(p));
	}
	free(rs.m);
	return r;
}

void groupcut_abort(const struct groupcut_params *p, uint64_t round, const char *why)
{
	int r = put(p, FERRY_GROUP_ABORT, round, ferry_now_ns(), why);
	if (r < 0)
		log_warning_errno(r,
				  "VM %s: cannot record that it gave up round %" PRIu64
				  " of group %s",
				  p->vm, round, p->group);
}

int groupcut_ready(const struct groupcut_params *p, uint64_t round, char *why, size_t why_size)
{
	int r = put(p, FERRY_GROUP_READY, round, ferry_now_ns(), NULL);
	if (r < 0) {
		snprintf(why, why_size, "cannot record that it is ready: %s", strerror(-r));
		return r;
	}
	int limit = p->prepare_timeout_ms > 0 ? p->prepare_timeout_ms : 10000;
	r = wait_all(p, round, FERRY_GROUP_READY, ferry_mono_ns() + (int64_t)limit * 1000000, why,
		     why_size);
	if (r == -EAGAIN)
		groupcut_abort(p, round, why);
	return r;
}

struct latest {
	const struct groupcut_params *p;
	uint64_t round;
	int64_t t;
	int r;
};

static int read_paused(const char *vm, uint8_t step, void *userdata)
{
	struct latest *l = userdata;
	if (step != FERRY_GROUP_PAUSED)
		return 0;
	struct ferry_group_record g;
	int r = ferry_control_get_group(l->p->cache, l->p->group, l->round, step, vm, &g);
	if (r < 0)
		return r;
	l->t = MAX(l->t, g.time_ns);
	return 0;
}

int groupcut_paused(const struct groupcut_params *p, uint64_t round, int64_t paused_ns,
		    int64_t *ret_t, char *why, size_t why_size)
{
	int r = put(p, FERRY_GROUP_PAUSED, round, paused_ns, NULL);
	if (r < 0) {
		snprintf(why, why_size, "cannot record that it paused: %s", strerror(-r));
		groupcut_abort(p, round, why);
		return -EAGAIN;
	}
	int limit = p->pause_limit_ms > 0 ? p->pause_limit_ms : 2000;
	r = wait_all(p, round, FERRY_GROUP_PAUSED, ferry_mono_ns() + (int64_t)limit * 1000000, why,
		     why_size);
	struct latest l = { p, round, paused_ns, 0 };
	if (r >= 0)
		r = ferry_control_list_group(p->cache, p->group, round, read_paused, &l);
	if (r < 0 && r != -EAGAIN) {
		snprintf(why, why_size, "cannot read the group's pause times: %s", strerror(-r));
		r = -EAGAIN;
	}
	if (r < 0) {
		groupcut_abort(p, round, why);
		return r;
	}
	*ret_t = l.t;
	return 0;
}

void groupcut_done(const struct groupcut_params *p, uint64_t round)
{
	int r = put(p, FERRY_GROUP_CUT, round, ferry_now_ns(), NULL);
	if (r >= 0)
		r = ferry_control_delete_group_rounds(p->cache, p->group, p->vm, round);
	if (r < 0)
		log_warning_errno(r, "VM %s: group %s, round %" PRIu64 ": cannot tidy its records",
				  p->vm, p->group, round);
}
