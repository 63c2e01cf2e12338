/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry recovery-points --group: the group points of a consistency group,
 * the rounds of which every member VM at the round's time holds a point
 * (grouppoint.h), one line each, oldest first, or as JSON; with --all also
 * the rounds some member lacks. The failover verbs' --group is in
 * ferry-failover.c.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "grouppoint.h"

static const char group_points_help[] =
	"Usage: ferry recovery-points --vault DIR --group GROUP [--all] [--json]\n"
	"\n"
	"The group points of a consistency group, oldest first: the rounds of which\n"
	"every VM of the group has a recovery point, all cut at one instant (a VM\n"
	"that joined the group later is not needed in the rounds before). One line\n"
	"each: group point id (its time, as point ids), consistency (app when every\n"
	"VM's point is), time, VMs with a point / VMs in the group then, round, and\n"
	"each VM's point.\n"
	"\n"
	"  --all    also the rounds some VM has no point of (incomplete: no group\n"
	"           point, the failover verbs' --group refuses them)\n"
	"  --json   one object: group, members, points\n";

struct group_opts {
	const char *vault, *group;
	int all, json;
};

static int group_opt(int c, const char *arg, void *userdata)
{
	struct group_opts *o = userdata;
	switch (c) {
	case 'g':
		o->group = arg;
		return 0;
	case 'a':
		o->all = 1;
		return 0;
	default:
		return -EINVAL;
	}
}

/* -1 to go on, or an exit status. */
static int parse_group_points(int argc, char **argv, struct group_opts *o)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "group", required_argument, NULL, 'g' },
		{ "all", no_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	struct opts co = { 0 };
	if (parse_opts(argc, argv, longopts, &co, group_points_help, group_opt, o) < 0)
		return 2;
	if (co.help)
		return 0;
	o->vault = co.vault;
	o->json = co.json;
	if (!o->vault || !o->group || optind != argc) {
		log_error(
			"usage: ferry recovery-points --vault DIR --group GROUP [--all] [--json]");
		return 2;
	}
	if (!ferry_name_valid(o->group)) {
		log_error("'%s' is not a valid group name: use 1-64 of [A-Za-z0-9._-]", o->group);
		return 2;
	}
	return -1;
}

static const char *round_consistency(const struct grouppoint_round *rd)
{
	return rd->app ? "app" : "crash";
}

static void print_text(const struct grouppoint_set *g, int all)
{
	for (size_t i = 0; i < g->nrounds; i++) {
		const struct grouppoint_round *rd = &g->rounds[i];
		if (!rd->complete && !all)
			continue;
		char when[FERRY_TIME_STRING_SIZE];
		ferry_format_time(rd->time_ns, when, sizeof(when));
		printf("%-22s %-6s %s  %u/%u VMs  round %llu", rd->id,
		       rd->complete ? round_consistency(rd) : "-", when, rd->have, rd->need,
		       (unsigned long long)rd->round);
		for (size_t m = 0; m < g->nmembers; m++)
			if (rd->points[m].id)
				printf("  %s:%s", g->members[m].name, rd->points[m].name);
		if (!rd->complete) {
			printf("  incomplete, none on");
			for (size_t m = 0; m < g->nmembers; m++)
				if (!rd->points[m].id && grouppoint_required(g, m, rd))
					printf(" %s", g->members[m].name);
		}
		printf("\n");
	}
}

static json_object *round_json(const struct grouppoint_set *g, const struct grouppoint_round *rd)
{
	char when[FERRY_TIME_STRING_SIZE];
	ferry_format_time(rd->time_ns, when, sizeof(when));
	json_object *o = json_object_new_object(), *vms = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(rd->id));
	json_object_object_add(o, "round", json_object_new_int64((int64_t)rd->round));
	json_object_object_add(o, "time", json_object_new_string(when));
	json_object_object_add(o, "time_ns", json_object_new_int64(rd->time_ns));
	json_object_object_add(o, "consistency",
			       rd->complete ? json_object_new_string(round_consistency(rd)) : NULL);
	json_object_object_add(o, "complete", json_object_new_boolean(rd->complete));
	json_object_object_add(o, "vms", json_object_new_int((int)rd->have));
	/* The members in the group at the round's time; a later one's point
	 * below is null. */
	json_object_object_add(o, "vms_needed", json_object_new_int((int)rd->need));
	for (size_t m = 0; m < g->nmembers; m++)
		json_object_object_add(
			vms, g->members[m].name,
			rd->points[m].id ? json_object_new_string(rd->points[m].name) : NULL);
	json_object_object_add(o, "points", vms);
	return o;
}

static void print_json(const struct grouppoint_set *g, int all)
{
	json_object *root = json_object_new_object(), *members = json_object_new_array(),
		    *points = json_object_new_array();
	json_object_object_add(root, "group", json_object_new_string(g->group));
	for (size_t m = 0; m < g->nmembers; m++)
		json_object_array_add(members, json_object_new_string(g->members[m].name));
	json_object_object_add(root, "members", members);
	for (size_t i = 0; i < g->nrounds; i++)
		if (g->rounds[i].complete || all)
			json_object_array_add(points, round_json(g, &g->rounds[i]));
	json_object_object_add(root, "group_points", points);
	printf("%s\n", json_object_to_json_string_ext(
			       root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
}

int cmd_group_points(int argc, char **argv)
{
	struct group_opts o = { 0 };
	int r = parse_group_points(argc, argv, &o);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0)
		return 1;
	_cleanup_(grouppoint_freep) struct grouppoint_set *g = NULL;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	/* One snapshot for every member's points. */
	r = ferry_catalog_begin_read(c);
	if (r >= 0)
		r = grouppoint_load(c, o.group, &g);
	ferry_catalog_rollback(c);
	if (r == -ENOENT) {
		log_error("no VM in group %s in vault %s (ferry enable-replication --group %s puts "
			  "VMs there)",
			  o.group, o.vault, o.group);
		return 1;
	}
	if (r < 0)
		return log_error_errno(r, "cannot read group %s", o.group), 1;
	if (o.json)
		print_json(g, o.all);
	else
		print_text(g, o.all);
	return 0;
}
