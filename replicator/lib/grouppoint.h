/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Group points, as the target sees them: the rounds of a consistency group
 * that every member VM holds. The members of group G are the VMs of the
 * vault whose resource "group" is G; each round's cut left on every member
 * a recovery point with the round's number (ferry_point.group_round) and
 * the same marker time T. A round is a group point when every member that
 * was in the group at T has its point (R, T); the CLI's group verbs act on
 * the members' points of one group point (docs/failover.md, "Consistency
 * groups"). A VM joins its group when it is enabled, so it was a member
 * at T when it was created (ferry_vm.created_ns) no later than T, or when
 * it has a point no later than T (which also covers a source clock behind
 * the target's): a VM added to the group later leaves the group points
 * before it whole, and they stay group points, which thinning keeps
 * together (maint.c judges rounds by the same rule).
 *
 * A group point's id is T as a point name, YYYYMMDDTHHMMSSZ, which every
 * member's point of the round also starts with. Two rounds of the group
 * in one second (an interval of about a second) both take the long form,
 * YYYYMMDDTHHMMSSZ-rR, which is accepted for every round at all times.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/catalog.h"
#include "ferry/util.h"

struct grouppoint_round {
	uint64_t round;
	int64_t time_ns;
	char id[48];   /* YYYYMMDDTHHMMSSZ, or the long form (above) */
	unsigned have; /* members with a point of it */
	unsigned need; /* members that were in the group at its time */
	int complete;  /* each of those has one: a group point */
	int app;       /* complete, and every member's point is app-consistent */
	/* Per member (grouppoint_set.members order): its point of the round,
	 * id 0 where it has none. */
	struct ferry_point *points;
};

struct grouppoint_set {
	char group[FERRY_NAME_MAX + 1];
	struct ferry_vm *members; /* in name order */
	/* Per member: since when it is in the group, as far as the catalog
	 * tells: its creation or its oldest point, whichever is first. */
	int64_t *since;
	size_t nmembers;
	struct grouppoint_round *rounds; /* oldest first (time, then round) */
	size_t nrounds;
};

/* The members of group and their rounds, read from c (in the caller's
 * transaction, if any). -ENOENT when no VM is in the group. */
int grouppoint_load(struct ferry_catalog *c, const char *group, struct grouppoint_set **ret);
struct grouppoint_set *grouppoint_free(struct grouppoint_set *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct grouppoint_set *, grouppoint_free)

/*
 * The group point spec names: an id (either form), "latest" (the newest
 * group point) or "latest-app-consistent" (the newest whose every member's
 * point is app-consistent). Only complete rounds are group points; a
 * member that joined the group later has no point of one (points[] id 0).
 * On failure -ENOENT (or -EINVAL for an id two rounds share) with msg
 * saying why, naming the group and, for an incomplete round, the members
 * that lack it.
 */
int grouppoint_find(const struct grouppoint_set *g, const char *spec,
		    const struct grouppoint_round **ret, char *msg, size_t msgsize);

/* Whether member m of g was in the group at rd's time: a round is
 * complete when each such member has a point of it. */
int grouppoint_required(const struct grouppoint_set *g, size_t m,
			const struct grouppoint_round *rd);

/* The long form of a round's id: YYYYMMDDTHHMMSSZ-rR. */
void grouppoint_long_id(int64_t time_ns, uint64_t round, char *buf, size_t size);
