/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Group points from the catalog: the members' points of each round are
 * gathered, sorted by (time, round, member) so that a round is a run of
 * equal keys, and a round is a group point when the run has a point of
 * every member that was in the group at its time. Ids follow the point
 * names' form, YYYYMMDDTHHMMSSZ, and take the long form -rR only where two
 * rounds share a second.
 */
#include "grouppoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/changelog.h"
#include "ferry/util.h"

/* One member's group point while gathering. */
struct entry {
	struct ferry_point p;
	size_t member;
};

struct loader {
	struct grouppoint_set *g;
	struct entry *e;
	size_t n;
	size_t member; /* while listing its points */
};

struct grouppoint_set *grouppoint_free(struct grouppoint_set *g)
{
	if (g) {
		for (size_t i = 0; i < g->nrounds; i++)
			free(g->rounds[i].points);
		free(g->rounds);
		free(g->members);
		free(g->since);
		free(g);
	}
	return NULL;
}

static int add_member(const struct ferry_vm *vm, void *userdata)
{
	struct grouppoint_set *g = userdata;
	struct ferry_vm *n = realloc(g->members, (g->nmembers + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	g->members = n;
	int64_t *s = realloc(g->since, (g->nmembers + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	g->since = s;
	g->since[g->nmembers] = vm->created_ns;
	g->members[g->nmembers++] = *vm;
	return 0;
}

static int add_point(const struct ferry_point *p, void *userdata)
{
	struct loader *l = userdata;
	int64_t *since = &l->g->since[l->member];
	*since = MIN(*since, p->time_ns);
	if (!p->group_round)
		return 0;
	struct entry *n = realloc(l->e, (l->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	l->e = n;
	l->e[l->n++] = (struct entry){ *p, l->member };
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	if (x->p.time_ns != y->p.time_ns)
		return x->p.time_ns < y->p.time_ns ? -1 : 1;
	if (x->p.group_round != y->p.group_round)
		return x->p.group_round < y->p.group_round ? -1 : 1;
	if (x->member != y->member)
		return x->member < y->member ? -1 : 1;
	return x->p.id < y->p.id ? -1 : x->p.id > y->p.id;
}

/* The second of time_ns as a point name has it. */
static void short_id(int64_t time_ns, char *buf, size_t size)
{
	time_t t = (time_t)(time_ns / 1000000000);
	struct tm tm;
	if (time_ns < 0 || !gmtime_r(&t, &tm) || !strftime(buf, size, "%Y%m%dT%H%M%SZ", &tm))
		snprintf(buf, size, "invalid");
}

void grouppoint_long_id(int64_t time_ns, uint64_t round, char *buf, size_t size)
{
	char s[24];
	short_id(time_ns, s, sizeof(s));
	snprintf(buf, size, "%s-r%llu", s, (unsigned long long)round);
}

/* Turns the sorted entries into rounds. */
static int build_rounds(struct grouppoint_set *g, const struct entry *e, size_t n)
{
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && e[b].p.time_ns == e[a].p.time_ns &&
				e[b].p.group_round == e[a].p.group_round;
		     b++)
			;
		struct grouppoint_round *rd = realloc(g->rounds, (g->nrounds + 1) * sizeof(*rd));
		if (!rd)
			return -ENOMEM;
		g->rounds = rd;
		rd = &g->rounds[g->nrounds];
		*rd = (struct grouppoint_round){ .round = e[a].p.group_round,
						 .time_ns = e[a].p.time_ns };
		rd->points = calloc(g->nmembers, sizeof(*rd->points));
		if (!rd->points)
			return -ENOMEM;
		g->nrounds++;
		unsigned napp = 0;
		for (size_t i = a; i < b; i++) {
			/* Two points of one round on a member (none should be):
			 * the later one. */
			if (!rd->points[e[i].member].id)
				rd->have++;
			rd->points[e[i].member] = e[i].p;
		}
		/* A member with a point of the round counts among those
		 * needed (its since is no later than the round). */
		for (size_t m = 0; m < g->nmembers; m++) {
			if (rd->points[m].id && rd->points[m].consistency == FERRY_CONSISTENCY_APP)
				napp++;
			rd->need += grouppoint_required(g, m, rd);
		}
		rd->complete = rd->have == rd->need;
		rd->app = rd->complete && napp == rd->have;
	}
	/* Ids: the short form unless another round shares its second. */
	for (size_t i = 0; i < g->nrounds; i++) {
		struct grouppoint_round *rd = &g->rounds[i];
		int64_t sec = rd->time_ns / 1000000000;
		int shared = (i > 0 && g->rounds[i - 1].time_ns / 1000000000 == sec) ||
			     (i + 1 < g->nrounds && g->rounds[i + 1].time_ns / 1000000000 == sec);
		if (shared)
			grouppoint_long_id(rd->time_ns, rd->round, rd->id, sizeof(rd->id));
		else
			short_id(rd->time_ns, rd->id, sizeof(rd->id));
	}
	return 0;
}

int grouppoint_load(struct ferry_catalog *c, const char *group, struct grouppoint_set **ret)
{
	_cleanup_(grouppoint_freep) struct grouppoint_set *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	snprintf(g->group, sizeof(g->group), "%s", group);
	int r = ferry_catalog_vm_list_by_resource(c, "group", group, add_member, g);
	if (r < 0)
		return r;
	if (g->nmembers == 0)
		return -ENOENT;
	struct loader l = { .g = g };
	for (size_t m = 0; r >= 0 && m < g->nmembers; m++) {
		l.member = m;
		r = ferry_catalog_point_list(c, g->members[m].id, add_point, &l);
	}
	if (r >= 0) {
		qsort(l.e, l.n, sizeof(*l.e), cmp_entry);
		r = build_rounds(g, l.e, l.n);
	}
	free(l.e);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(g);
	return 0;
}

int grouppoint_required(const struct grouppoint_set *g, size_t m, const struct grouppoint_round *rd)
{
	return g->since[m] <= rd->time_ns;
}

/* The members that were in the group at rd's time without a point of it,
 * as "a, b". */
static void missing(const struct grouppoint_set *g, const struct grouppoint_round *rd, char *buf,
		    size_t size)
{
	size_t len = 0;
	buf[0] = 0;
	for (size_t m = 0; m < g->nmembers && len < size; m++)
		if (!rd->points[m].id && grouppoint_required(g, m, rd))
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "",
						g->members[m].name);
}

int grouppoint_find(const struct grouppoint_set *g, const char *spec,
		    const struct grouppoint_round **ret, char *msg, size_t msgsize)
{
	int latest = strcmp(spec, "latest") == 0,
	    latest_app = strcmp(spec, "latest-app-consistent") == 0;
	if (latest || latest_app) {
		for (size_t i = g->nrounds; i-- > 0;)
			if (g->rounds[i].complete && (latest || g->rounds[i].app)) {
				*ret = &g->rounds[i];
				return 0;
			}
		snprintf(msg, msgsize,
			 "group %s has no %sgroup point: no round of which every member at its "
			 "time has a%s point (see ferry recovery-points --group %s --all)",
			 g->group, latest ? "" : "app-consistent ",
			 latest ? "" : "n app-consistent", g->group);
		return -ENOENT;
	}
	const struct grouppoint_round *found = NULL;
	unsigned matches = 0;
	for (size_t i = 0; i < g->nrounds; i++) {
		char long_id[48], short_form[24];
		grouppoint_long_id(g->rounds[i].time_ns, g->rounds[i].round, long_id,
				   sizeof(long_id));
		short_id(g->rounds[i].time_ns, short_form, sizeof(short_form));
		if (strcmp(spec, long_id) == 0) {
			found = &g->rounds[i];
			matches = 1;
			break;
		}
		if (strcmp(spec, short_form) == 0) {
			found = &g->rounds[i];
			matches++;
		}
	}
	if (matches > 1) {
		snprintf(msg, msgsize,
			 "group %s has several rounds in the second %s: name one as %s-rROUND "
			 "(see ferry recovery-points --group %s --all)",
			 g->group, spec, spec, g->group);
		return -EINVAL;
	}
	if (!found) {
		snprintf(msg, msgsize,
			 "group %s has no group point '%s' (see ferry recovery-points --group %s)",
			 g->group, spec, g->group);
		return -ENOENT;
	}
	if (!found->complete) {
		char who[512];
		missing(g, found, who, sizeof(who));
		snprintf(msg, msgsize,
			 "round %s of group %s is no group point: %s %s no point of it (the round "
			 "did not complete there, or was thinned)",
			 found->id, g->group, who, found->need - found->have == 1 ? "has" : "have");
		return -ENOENT;
	}
	*ret = found;
	return 0;
}
