/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry status: per VM, what the catalog knows (state, points, lag), what
 * waits in the cache, and what the agent last said about itself (its status
 * blob in the cache), as text or JSON, with the VM's health against its RPO
 * target (health.h) and the worst health of each consistency group; with
 * --check, one Nagios-style line per VM and group and the exit status of the
 * worst. Read-only: it opens the vault for reading and never writes the
 * cache, so it runs beside a replicator (which records health changes as
 * events).
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/control.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "grouppoint.h"
#include "health.h"
#include "observe.h"

/* A consistency group: its members and their worst health. */
struct group {
	char name[FERRY_NAME_MAX + 1];
	enum health_state worst;
	size_t n;
	char *members; /* "vm state, vm state" */
	char last[96]; /* its newest group point, and its age */
	char why[768]; /* why group points fail, "" if they do not */
};

struct status_ctx {
	struct ferry_vault *v;
	int json, check;
	int64_t rpo_target_s; /* --rpo-target, 0: each VM's own */
	json_object *arr;
	int64_t now;
	enum health_state worst;
	unsigned count[3];
	FILE *check_out; /* --check: the per-VM lines, after the summary */
	struct group *groups;
	size_t ngroups;
};

static int res_json(const char *kind, const char *value, void *userdata)
{
	json_object_object_add(userdata, kind, json_object_new_string(value));
	return 0;
}

static const char *failover_kind(const struct ferry_failover *f)
{
	if (f->kind == FERRY_FAILOVER_TEST)
		return "test failover";
	return f->state == FERRY_FAILOVER_COMMITTED ? "failover (committed)" : "failover";
}

static int failover_text(const struct ferry_failover *f, void *userdata)
{
	printf("  %-14s %s from %s on network %s/%s\n", failover_kind(f), f->name, f->point_name,
	       f->network, f->subnet);
	return 0;
}

static int failover_json(const struct ferry_failover *f, void *userdata)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(f->name));
	json_object_object_add(o, "kind", json_object_new_string(failover_kind(f)));
	json_object_object_add(o, "recovery_point", json_object_new_string(f->point_name));
	json_object_object_add(o, "network", json_object_new_string(f->network));
	json_object_object_add(o, "subnet", json_object_new_string(f->subnet));
	json_object_array_add(userdata, o);
	return 0;
}

/* What the agent last said about itself (its status blob in the cache). */
struct agent_report {
	int have; /* 1: st is valid; 0: none; <0: -errno reading it */
	struct ferry_agent_status st;
	int64_t age_ns; /* now minus when it was written */
	int silent;
};

/* Silent as health.h says: several cycles without a status. */
static void agent_report_judge(struct agent_report *a, int64_t now)
{
	if (a->have <= 0)
		return;
	a->age_ns = MAX(ferry_time_since(now, a->st.written_ns), INT64_C(0));
	a->silent = health_agent_silent(&a->st, now);
}

static const char *tracker_name(uint8_t t)
{
	return t == FERRY_TRACKER_SCAN    ? "scan" :
	       t == FERRY_TRACKER_QEMU    ? "qemu" :
	       t == FERRY_TRACKER_LIBVIRT ? "libvirt" :
					    "unknown";
}

static json_object *json_time(int64_t ns)
{
	char buf[32];
	if (ns <= 0)
		return NULL;
	ferry_format_time(ns, buf, sizeof(buf));
	return json_object_new_string(buf);
}

/* Seconds with millisecond resolution, printed as such. */
static json_object *json_seconds(int64_t ns)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%.3f", (double)ns / 1e9);
	return json_object_new_double_s((double)ns / 1e9, buf);
}

static json_object *json_u64(uint64_t v)
{
	return v == FERRY_STATUS_UNKNOWN ? NULL : json_object_new_int64((int64_t)v);
}

static json_object *agent_json(const struct agent_report *a)
{
	json_object *o = json_object_new_object();
	const struct ferry_agent_status *st = &a->st;
	json_object_object_add(o, "tracker", json_object_new_string(tracker_name(st->tracker)));
	json_object_object_add(o, "updated", json_time(st->written_ns));
	json_object_object_add(o, "updated_seconds_ago", json_seconds(a->age_ns));
	json_object_object_add(o, "interval_seconds", json_object_new_int64(st->interval_s));
	json_object_object_add(o, "silent", json_object_new_boolean(a->silent));
	json_object_object_add(o, "error",
			       st->error ? json_object_new_string(strerror(st->error)) : NULL);
	json_object_object_add(o, "error_message",
			       st->message[0] ? json_object_new_string(st->message) : NULL);
	json_object_object_add(o, "cycle", json_object_new_int64((int64_t)st->cycle));
	json_object_object_add(o, "last_marker", json_time(st->marker_ns));
	json_object_object_add(o, "last_cycle_start", json_time(st->started_ns));
	json_object_object_add(o, "last_cycle_read_bytes",
			       st->cycle ? json_object_new_int64((int64_t)st->read_bytes) : NULL);
	json_object_object_add(o, "app_error",
			       st->app_error ? json_object_new_string(strerror(st->app_error)) :
					       NULL);
	json_object_object_add(o, "app_error_message",
			       st->app_message[0] ? json_object_new_string(st->app_message) : NULL);
	json_object_object_add(o, "app_attempt", json_time(st->app_attempt_ns));
	json_object_object_add(o, "app_ok", json_time(st->app_ok_ns));
	return o;
}

/* The cycle in progress at the source, when the agent reads whole disks:
 * how far, how fast, how long still. Rate and ETA are the agent's own
 * (its read rate over this run), the ETA less the time since it said so;
 * "unknown" when it could not tell. */
struct progress {
	int have;
	double pct;
	uint64_t done, total, rate;
	int64_t eta_ns; /* -1: unknown */
	int64_t age_ns; /* since the agent reported it */
};

static void progress_of(const struct agent_report *a, int64_t now, struct progress *p)
{
	const struct ferry_agent_status *st = &a->st;
	*p = (struct progress){ .eta_ns = -1 };
	if (a->have <= 0 || st->progress_total_bytes == 0)
		return;
	p->have = 1;
	p->done = st->progress_done_bytes;
	p->total = st->progress_total_bytes;
	p->rate = st->progress_rate;
	p->pct = 100.0 * (double)p->done / (double)p->total;
	p->age_ns = MAX(ferry_time_since(now, st->written_ns), INT64_C(0));
	if (p->rate) {
		double left =
			(double)(p->total - p->done) / (double)p->rate - (double)p->age_ns / 1e9;
		p->eta_ns = left <= 0 ? 0 : left > 1e9 ? -1 : (int64_t)(left * 1e9);
	}
}

static json_object *progress_json(const struct progress *p)
{
	if (!p->have)
		return NULL;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "done_bytes", json_object_new_int64((int64_t)p->done));
	json_object_object_add(o, "total_bytes", json_object_new_int64((int64_t)p->total));
	json_object_object_add(o, "percent", json_object_new_double(p->pct));
	json_object_object_add(o, "rate_bytes_per_second",
			       p->rate ? json_object_new_int64((int64_t)p->rate) : NULL);
	json_object_object_add(o, "eta_seconds",
			       p->eta_ns >= 0 ? json_object_new_int64(p->eta_ns / 1000000000) :
						NULL);
	json_object_object_add(o, "reported_seconds_ago", json_seconds(p->age_ns));
	return o;
}

static void progress_text(const struct progress *p)
{
	char total[32], rate[32] = "rate unknown", eta[48] = "ETA unknown", age[32];
	if (!p->have)
		return;
	format_bytes(p->total, total, sizeof(total));
	if (p->rate)
		snprintf(rate, sizeof(rate), "%.1f MB/s", (double)p->rate / 1e6);
	if (p->eta_ns >= 0) {
		int64_t s = p->eta_ns / 1000000000;
		snprintf(eta, sizeof(eta), "ETA %lld:%02lld:%02lld", (long long)(s / 3600),
			 (long long)(s / 60 % 60), (long long)(s % 60));
	}
	format_age(p->age_ns, age, sizeof(age));
	printf("  source read    %.1f%% of %s, %s, %s (reported %s ago)\n", p->pct, total, rate,
	       eta, age);
}

/* The agent's app-consistent attempts, when it made any or should have. */
static void app_text(const struct ferry_vm *vm, const struct agent_report *a, int64_t now)
{
	const struct ferry_agent_status *st = &a->st;
	char age[32], ok[128] = "never", msg[4 * sizeof(st->app_message)];
	if (a->have <= 0 || st->app_attempt_ns <= 0) {
		if (vm->app_interval_s > 0)
			printf("  app-consistent no attempt reported by the agent yet (every %llds)\n",
			       (long long)vm->app_interval_s);
		return;
	}
	format_age(ferry_time_since(now, st->app_attempt_ns), age, sizeof(age));
	if (st->app_ok_ns > 0) {
		char when[32], ago[32];
		ferry_format_time(st->app_ok_ns, when, sizeof(when));
		format_age(ferry_time_since(now, st->app_ok_ns), ago, sizeof(ago));
		snprintf(ok, sizeof(ok), "%s (%s ago)", when, ago);
	}
	if (st->app_error)
		printf("  app-consistent last attempt failed %s ago: %s; last success %s\n", age,
		       st->app_message[0] ? log_escape(st->app_message, msg, sizeof(msg)) :
					    strerror(st->app_error),
		       ok);
	else
		printf("  app-consistent last attempt succeeded %s ago\n", age);
}

static void agent_text(const struct agent_report *a)
{
	char b1[32], b2[32], b3[32], when[32], age[32];
	const struct ferry_agent_status *st = &a->st;
	const char *none = a->have < 0 ? "unknown (the agent's status is unreadable)" :
					 "unknown (no status from the agent yet)";

	if (a->have <= 0)
		printf("  at the source  %s\n", none);
	else if (st->source_waiting_bytes == FERRY_STATUS_UNKNOWN)
		printf("  at the source  unknown (the %s tracker cannot tell)\n",
		       tracker_name(st->tracker));
	else {
		format_bytes(st->source_waiting_bytes, b1, sizeof(b1));
		printf("  at the source  %s written and not shipped yet\n", b1);
	}
	if (a->have <= 0 || st->cycle == 0)
		printf("  last cycle     %s\n", a->have > 0 ? "none completed yet" : none);
	else {
		format_bytes(st->shipped_bytes, b1, sizeof(b1));
		format_bytes(st->read_bytes, b2, sizeof(b2));
		ferry_format_time(st->started_ns, when, sizeof(when));
		snprintf(b3, sizeof(b3), "%.1f s", (double)st->duration_ns / 1e9);
		printf("  last cycle     #%llu at %s: %s, %s shipped in %llu segment%s, %s read\n",
		       (unsigned long long)st->cycle, when, b3, b1,
		       (unsigned long long)st->segments, st->segments == 1 ? "" : "s", b2);
	}
	if (a->have <= 0)
		return;
	ferry_format_time(st->written_ns, when, sizeof(when));
	format_age(a->age_ns, age, sizeof(age));
	/* What the agent said, not only its errno: a disk that changed size
	 * must be read here, not in a log at the source. */
	char msg[4 * sizeof(st->message)];
	if (a->silent)
		printf("  agent          silent since %s (%s; it reports every %us)\n", when, age,
		       st->interval_s);
	else if (st->error)
		printf("  agent          last cycle failed %s ago: %s\n", age,
		       st->message[0] ? log_escape(st->message, msg, sizeof(msg)) :
					strerror(st->error));
	else
		printf("  agent          %s tracker, reported %s ago, cycles every %us\n",
		       tracker_name(st->tracker), age, st->interval_s);
}

/* The VM's latest resync (catalog) and who holds its agent lease (cache). */
struct resync_report {
	int have; /* rs is valid */
	struct ferry_vm_resync rs;
	int lease; /* 1: l is valid; 0: none; <0: -errno reading it */
	struct ferry_lease l;
};

static void resync_report_read(struct ferry_catalog *c, const struct ferry_vm *vm,
			       struct ferry_cache *cache, struct resync_report *rr)
{
	rr->have = ferry_catalog_resync_get(c, vm->id, &rr->rs) >= 0;
	if (cache) {
		int r = ferry_control_get_lease(cache, vm->name, &rr->l);
		rr->lease = r >= 0 ? 1 : r == -ENOENT ? 0 : r;
	}
}

static void lease_id_hex(const struct ferry_lease *l, char buf[2 * FERRY_LEASE_ID_SIZE + 1])
{
	for (size_t i = 0; i < FERRY_LEASE_ID_SIZE; i++)
		snprintf(buf + 2 * i, 3, "%02x", l->id[i]);
}

static void resync_json(json_object *o, const struct resync_report *rr, int64_t now)
{
	json_object *rj = NULL, *lj = NULL;
	if (rr->have) {
		rj = json_object_new_object();
		json_object_object_add(rj, "epoch", json_object_new_int64((int64_t)rr->rs.epoch));
		json_object_object_add(rj, "requested", json_time(rr->rs.requested_ns));
		json_object_object_add(rj, "completed", json_time(rr->rs.done_ns));
		json_object_object_add(rj, "base_seq",
				       json_object_new_int64((int64_t)rr->rs.base_seq));
		json_object_object_add(rj, "reason", json_object_new_string(rr->rs.reason));
	}
	if (rr->lease > 0) {
		char id[2 * FERRY_LEASE_ID_SIZE + 1];
		lease_id_hex(&rr->l, id);
		lj = json_object_new_object();
		json_object_object_add(lj, "identity", json_object_new_string(id));
		json_object_object_add(lj, "host", json_object_new_string(rr->l.host));
		json_object_object_add(lj, "pid", json_object_new_int64(rr->l.pid));
		json_object_object_add(lj, "renewed", json_time(rr->l.written_ns));
		json_object_object_add(lj, "expires", json_time(rr->l.expires_ns));
		json_object_object_add(lj, "expired",
				       json_object_new_boolean(rr->l.expires_ns <= now));
	}
	json_object_object_add(o, "resync", rj);
	json_object_object_add(o, "agent_lease", lj);
	if (rr->lease < 0)
		json_object_object_add(o, "agent_lease_error",
				       json_object_new_string(strerror(-rr->lease)));
}

static void resync_text(const struct ferry_vm *vm, const struct resync_report *rr, int64_t now)
{
	char when[32], age[32], reason[4 * sizeof(rr->rs.reason)];
	if (rr->have &&
	    (vm->state == FERRY_VM_RESYNC_REQUIRED || vm->state == FERRY_VM_RESYNCING)) {
		ferry_format_time(rr->rs.requested_ns, when, sizeof(when));
		format_age(now - rr->rs.requested_ns, age, sizeof(age));
		printf("  resync         #%llu requested %s (%s ago)%s: %s\n",
		       (unsigned long long)rr->rs.epoch, when, age,
		       vm->state == FERRY_VM_RESYNCING ? ", the agent's chain resumed" :
							 ", waiting for the agent",
		       log_escape(rr->rs.reason, reason, sizeof(reason)));
	}
}

static void lease_text(const struct resync_report *rr, int64_t now)
{
	char id[2 * FERRY_LEASE_ID_SIZE + 1], when[32], age[32];
	if (rr->lease < 0) {
		printf("  agent lease    unreadable: %s\n", strerror(-rr->lease));
		return;
	}
	if (rr->lease == 0)
		return;
	lease_id_hex(&rr->l, id);
	ferry_format_time(rr->l.expires_ns, when, sizeof(when));
	format_age(rr->l.expires_ns > now ? rr->l.expires_ns - now : now - rr->l.expires_ns, age,
		   sizeof(age));
	printf("  agent lease    host %s, pid %u, state %.8s, %s %s (%s %s)\n", rr->l.host,
	       (unsigned)rr->l.pid, id, rr->l.expires_ns > now ? "until" : "expired", when, age,
	       rr->l.expires_ns > now ? "left" : "ago");
}

/* ---- health ---- */

static void health_json(json_object *o, const struct observation *ob, const struct health_report *h,
			int64_t override_s)
{
	json_object *reasons = json_object_new_array();
	for (size_t i = 0; i < h->n; i++)
		json_object_array_add(reasons, json_object_new_string(h->reasons[i].text));
	json_object_object_add(o, "health", json_object_new_string(health_state_name(h->state)));
	json_object_object_add(o, "health_reasons", reasons);
	json_object_object_add(o, "rpo_target_seconds", json_object_new_int64(h->rpo_target_s));
	json_object_object_add(o, "rpo_target_source",
			       json_object_new_string(override_s         ? "option" :
						      ob->rpo_target_own ? "vm" :
									   "default"));
	json_object_object_add(o, "group", ob->group[0] ? json_object_new_string(ob->group) : NULL);
}

static void health_text(const struct observation *ob, const struct health_report *h,
			int64_t override_s)
{
	char target[32];
	health_format_duration(h->rpo_target_s * INT64_C(1000000000), target, sizeof(target));
	printf("  health         %s (RPO target %s%s)", health_state_name(h->state), target,
	       override_s         ? ", from --rpo-target" :
	       ob->rpo_target_own ? "" :
				    ", the default");
	for (size_t i = 0; i < h->n; i++)
		printf(i ? "\n                 %s" : ": %s", h->reasons[i].text);
	printf("\n");
	if (ob->group[0])
		printf("  group          %s\n", ob->group);
}

/* Counts the VM's health into the summary and its group; with --check,
 * writes its line. */
static int note_health(struct status_ctx *s, const struct observation *ob,
		       const struct health_report *h)
{
	s->count[h->state]++;
	s->worst = MAX(s->worst, h->state);
	if (s->check_out) {
		char reasons[4096], lag[32] = "n/a", target[32];
		health_reasons_join(h, reasons, sizeof(reasons));
		if (h->lag_ns >= 0)
			health_format_duration(h->lag_ns, lag, sizeof(lag));
		health_format_duration(h->rpo_target_s * INT64_C(1000000000), target,
				       sizeof(target));
		fprintf(s->check_out, "%s %s - %s (lag %s, RPO target %s)\n", ob->vm.name,
			health_nagios_name(h->state), reasons[0] ? reasons : "healthy", lag,
			target);
	}
	if (!ob->group[0])
		return 0;
	struct group *g = NULL;
	for (size_t i = 0; i < s->ngroups && !g; i++)
		if (strcmp(s->groups[i].name, ob->group) == 0)
			g = &s->groups[i];
	if (!g) {
		g = realloc(s->groups, (s->ngroups + 1) * sizeof(*g));
		if (!g)
			return -ENOMEM;
		s->groups = g;
		g = &s->groups[s->ngroups++];
		*g = (struct group){ .worst = HEALTH_HEALTHY };
		snprintf(g->name, sizeof(g->name), "%s", ob->group);
	}
	char *m = NULL;
	if (asprintf(&m, "%s%s%s %s", g->members ?: "", g->members ? ", " : "", ob->vm.name,
		     health_state_name(h->state)) < 0)
		return -ENOMEM;
	free(g->members);
	g->members = m;
	g->n++;
	g->worst = MAX(g->worst, h->state);
	return 0;
}

static void groups_free(struct status_ctx *s)
{
	for (size_t i = 0; i < s->ngroups; i++)
		free(s->groups[i].members);
	free(s->groups);
}

/*
 * The group's own health, beside its members': its newest group point and,
 * when none came within two of its rounds, why (the newest round some
 * member lacks, naming those members: an agent down, a round its agents
 * gave up), as a warning. Fills why ("" when fine) and last (the newest
 * group point's id and age, or "none yet").
 */
static enum health_state group_points_judge(const struct status_ctx *s, const char *group,
					    char *last, size_t last_size, char *why,
					    size_t why_size)
{
	struct ferry_catalog *c = ferry_vault_catalog(s->v);
	_cleanup_(grouppoint_freep) struct grouppoint_set *g = NULL;
	why[0] = 0;
	snprintf(last, last_size, "none yet");
	if (grouppoint_load(c, group, &g) < 0 || g->nmembers == 0)
		return HEALTH_HEALTHY;
	char iv[32] = "";
	uint64_t interval = 60;
	if (ferry_catalog_resource_get(c, g->members[0].id, "group-interval", iv, sizeof(iv)) >= 0)
		(void)ferry_parse_u64(iv, strlen(iv), UINT32_MAX, &interval);
	const struct grouppoint_round *newest = NULL, *complete = NULL;
	for (size_t i = 0; i < g->nrounds; i++) {
		newest = &g->rounds[i];
		if (g->rounds[i].complete)
			complete = &g->rounds[i];
	}
	char age[32];
	if (complete) {
		format_age(s->now - complete->time_ns, age, sizeof(age));
		snprintf(last, last_size, "%s (%s ago)", complete->id, age);
	}
	/* Two rounds from the newest group point, or from when the newest
	 * member joined: before that, a point with it cannot be expected. */
	int64_t from = complete ? complete->time_ns : 0;
	for (size_t m = 0; m < g->nmembers; m++)
		from = MAX(from, g->members[m].created_ns);
	if (s->now - from <= (int64_t)(2 * interval) * 1000000000)
		return HEALTH_HEALTHY;
	/* No group point within two rounds (or none at all). */
	if (newest && !newest->complete) {
		size_t n = 0;
		char lack[512] = "";
		for (size_t m = 0; m < g->nmembers; m++)
			if (!newest->points[m].id && grouppoint_required(g, m, newest))
				n += (size_t)snprintf(lack + MIN(n, sizeof(lack) - 1),
						      sizeof(lack) - MIN(n, sizeof(lack) - 1),
						      "%s%s", n ? ", " : "", g->members[m].name);
		snprintf(why, why_size, "no group point %s: round %s has no point of %s",
			 complete ? "for over two rounds" : "yet", newest->id, lack);
	} else
		snprintf(why, why_size,
			 "no group point %s: no member cut a round (agents down or rounds given "
			 "up: see each agent's log)",
			 complete ? "for over two rounds" : "yet");
	return HEALTH_WARNING;
}

/* Each group's own health into its worst and the vault's. */
static void groups_judge(struct status_ctx *s)
{
	for (size_t i = 0; i < s->ngroups; i++) {
		struct group *g = &s->groups[i];
		enum health_state h = group_points_judge(s, g->name, g->last, sizeof(g->last),
							 g->why, sizeof(g->why));
		g->worst = MAX(g->worst, h);
		s->worst = MAX(s->worst, h);
	}
}

static void groups_print(const struct status_ctx *s, json_object *top)
{
	json_object *arr = top ? json_object_new_array() : NULL;
	for (size_t i = 0; i < s->ngroups; i++) {
		const struct group *g = &s->groups[i];
		const char *last = g->last, *why = g->why;
		if (arr) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "group", json_object_new_string(g->name));
			json_object_object_add(o, "health",
					       json_object_new_string(health_state_name(g->worst)));
			json_object_object_add(o, "vms", json_object_new_string(g->members));
			json_object_object_add(o, "last_group_point", json_object_new_string(last));
			json_object_object_add(o, "group_points_failing",
					       why[0] ? json_object_new_string(why) : NULL);
			json_object_array_add(arr, o);
		} else if (s->check)
			printf("group %s %s - worst of %zu VM%s: %s%s%s\n", g->name,
			       health_nagios_name(g->worst), g->n, g->n == 1 ? "" : "s", g->members,
			       why[0] ? "; " : "", why);
		else {
			printf("group %s\n  health         %s, the worst of %s\n", g->name,
			       health_state_name(g->worst), g->members);
			printf("  group point    %s\n", last);
			if (why[0])
				printf("  failing        %s\n", why);
		}
	}
	if (arr)
		json_object_object_add(top, "groups", arr);
}

static int status_vm(const struct ferry_vm *vm, void *userdata)
{
	struct status_ctx *s = userdata;
	struct ferry_catalog *c = ferry_vault_catalog(s->v);
	struct resync_report rr = { 0 };
	_cleanup_free_ struct observation *ob = malloc(sizeof(*ob));
	if (!ob)
		return -ENOMEM;
	struct ferry_cache *cache;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r >= 0) {
		r = observe_vm(c, vm, cache, 0, ob);
		resync_report_read(c, vm, cache, &rr);
		ferry_cache_free(cache);
	} else {
		r = observe_vm(c, vm, NULL, r, ob);
		resync_report_read(c, vm, NULL, &rr);
	}
	if (r < 0)
		return r;
	const struct last_points lp = { .last = ob->last,
					.last_app = ob->last_app,
					.have = ob->have_last,
					.have_app = ob->have_app,
					.count = ob->points };
	const char *tracker = ob->tracker;
	uint64_t pending = ob->pending_bytes;
	size_t nseg = ob->pending_segments;
	int cache_ok = ob->cache >= 0;
	struct agent_report agent = { .have = ob->agent, .st = ob->status };
	agent_report_judge(&agent, s->now);
	struct progress prog;
	progress_of(&agent, s->now, &prog);

	struct health_report h;
	observe_health(ob, s->now, s->rpo_target_s, &h);
	r = note_health(s, ob, &h);
	if (r < 0)
		return r;
	if (s->check && !s->json)
		return 0;
	double pct = vm->initial_total_bytes ? 100.0 * (double)vm->initial_done_bytes /
						       (double)vm->initial_total_bytes :
					       0.0;
	int64_t rpo = vm->marker_ns ? s->now - vm->marker_ns : -1;
	int cycle_known = agent.have > 0 && agent.st.cycle > 0;

	if (s->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "vm", json_object_new_string(vm->name));
		json_object_object_add(o, "state",
				       json_object_new_string(ferry_vm_state_name(vm->state)));
		if (vm->state == FERRY_VM_INITIAL)
			json_object_object_add(o, "initial_replication_percent",
					       json_object_new_double(pct));
		if (vm->error[0])
			json_object_object_add(o, "error", json_object_new_string(vm->error));
		json_object_object_add(o, "recovery_points", json_object_new_int(lp.count));
		json_object_object_add(o, "last_recovery_point",
				       lp.have ? json_object_new_string(lp.last.name) : NULL);
		json_object_object_add(o, "last_app_consistent_point",
				       lp.have_app ? json_object_new_string(lp.last_app.name) :
						     NULL);
		json_object_object_add(o, "rpo_seconds",
				       rpo >= 0 ? json_object_new_int64(rpo / 1000000000) : NULL);
		json_object_object_add(o, "applied_seq",
				       json_object_new_int64((int64_t)vm->applied_seq));
		json_object_object_add(o, "pending_segments",
				       cache_ok ? json_object_new_int64((int64_t)nseg) : NULL);
		json_object_object_add(o, "pending_bytes",
				       cache_ok ? json_object_new_int64((int64_t)pending) : NULL);
		json_object_object_add(o, "tracker", json_object_new_string(tracker));
		json_object_object_add(o, "lag_seconds",
				       rpo >= 0 ? json_seconds(MAX(rpo, INT64_C(0))) : NULL);
		json_object_object_add(o, "source_pending_bytes",
				       agent.have > 0 ? json_u64(agent.st.source_waiting_bytes) :
							NULL);
		json_object_object_add(o, "last_cycle_seconds",
				       cycle_known ? json_seconds(agent.st.duration_ns) : NULL);
		json_object_object_add(
			o, "last_cycle_bytes",
			cycle_known ? json_object_new_int64((int64_t)agent.st.shipped_bytes) :
				      NULL);
		json_object_object_add(
			o, "last_cycle_segments",
			cycle_known ? json_object_new_int64((int64_t)agent.st.segments) : NULL);
		json_object_object_add(o, "agent", agent.have > 0 ? agent_json(&agent) : NULL);
		json_object_object_add(o, "source_progress", progress_json(&prog));
		health_json(o, ob, &h, s->rpo_target_s);
		resync_json(o, &rr, s->now);
		if (agent.have < 0)
			json_object_object_add(o, "agent_status_error",
					       json_object_new_string(strerror(-agent.have)));
		json_object *res = json_object_new_object();
		r = ferry_catalog_resource_list(c, vm->id, res_json, res);
		json_object_object_add(o, "resources", res);
		json_object *fo = json_object_new_array();
		if (r >= 0)
			r = ferry_catalog_failover_list(c, vm->id, failover_json, fo);
		json_object_object_add(o, "failovers", fo);
		json_object_array_add(s->arr, o);
		return r;
	}

	char when[32], age[32], bytes[32], error[4 * sizeof(vm->error)];
	char url[4 * sizeof(vm->cache_url)];
	printf("%s\n", vm->name);
	if (vm->state == FERRY_VM_INITIAL)
		printf("  state          initial replication, %.1f%%\n", pct);
	else
		printf("  state          %s\n", ferry_vm_state_name(vm->state));
	if (vm->error[0])
		printf("  error          %s\n", log_escape(vm->error, error, sizeof(error)));
	resync_text(vm, &rr, s->now);
	health_text(ob, &h, s->rpo_target_s);
	printf("  tracker        %s\n", tracker);
	if (lp.have) {
		ferry_format_time(lp.last.time_ns, when, sizeof(when));
		format_age(s->now - lp.last.time_ns, age, sizeof(age));
		printf("  last point     %s (%s, %s, %s ago), %u in all\n", lp.last.name,
		       consistency_name(lp.last.consistency), when, age, lp.count);
	} else
		printf("  last point     none yet\n");
	if (rpo >= 0) {
		if (rpo < INT64_C(120) * 1000000000)
			snprintf(age, sizeof(age), "%.1f s", (double)MAX(rpo, INT64_C(0)) / 1e9);
		else
			format_age(rpo, age, sizeof(age));
		printf("  lag (RPO)      %s since the newest applied consistency marker\n", age);
	} else
		printf("  lag (RPO)      n/a (no consistency marker applied yet)\n");
	if (cache_ok) {
		format_bytes(pending, bytes, sizeof(bytes));
		printf("  pending        %zu segment%s, %s in cache %s\n", nseg,
		       nseg == 1 ? "" : "s", bytes, log_escape(vm->cache_url, url, sizeof(url)));
	} else
		printf("  pending        unknown: cache %s unreachable\n",
		       log_escape(vm->cache_url, url, sizeof(url)));
	progress_text(&prog);
	agent_text(&agent);
	app_text(vm, &agent, s->now);
	lease_text(&rr, s->now);
	r = ferry_catalog_failover_list(c, vm->id, failover_text, NULL);
	if (r < 0)
		return r;
	printf("  target resources\n");
	return ferry_catalog_resource_list(c, vm->id, res_text, NULL);
}

static const char status_help[] =
	"Usage: ferry status --vault DIR [--json] [--check] [--rpo-target SECONDS]\n\n"
	"Per VM: state (initial replication with %, protected, error), health\n"
	"against its RPO target with the reasons, tracker, last recovery point, lag\n"
	"(RPO) now, segments and bytes waiting in the cache and at the source, the\n"
	"progress of a cycle reading whole disks at the source, the agent's last\n"
	"cycle (duration, size), whether the agent has gone silent, its\n"
	"app-consistent attempts; target resources. Per consistency group: the\n"
	"worst health of its VMs.\n\n"
	"  --json                 the same as JSON\n"
	"  --check                one Nagios-style line per VM and group, after a\n"
	"                         summary; exit 0 healthy, 1 warning, 2 critical (the\n"
	"                         worst), 3 unknown (the vault cannot be read)\n"
	"  --rpo-target SECONDS   judge every VM against this target instead of its\n"
	"                         own (enable-replication --rpo-target, or by default\n"
	"                         three agent cycles and at least 60 s)\n";

struct status_opts {
	int *check;
	int64_t *rpo_target;
};

static int status_opt(int c, const char *arg, void *userdata)
{
	struct status_opts *so = userdata;
	switch (c) {
	case 'c':
		*so->check = 1;
		return 0;
	case 'r':
		if (health_parse_rpo_target(arg, so->rpo_target) < 0) {
			log_error("--rpo-target wants seconds, 1 to %d, not '%s'",
				  HEALTH_RPO_TARGET_MAX, arg);
			return -EINVAL;
		}
		return 0;
	default:
		return -EINVAL;
	}
}

/* -1 to go on, or an exit status (3 instead of 2 with --check: a usage
 * error is an unknown to a monitoring system). */
static int parse_status(int argc, char **argv, struct opts *o, int *check, int64_t *rpo_target)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ "check", no_argument, NULL, 'c' },
		{ "rpo-target", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--check") == 0)
			*check = 1;
	int usage = *check ? HEALTH_UNKNOWN : 2;
	struct status_opts so = { check, rpo_target };
	if (parse_opts(argc, argv, longopts, o, status_help, status_opt, &so) < 0)
		return usage;
	if (o->help)
		return 0;
	if (optind != argc) {
		log_error("usage: ferry status --vault DIR [--json] [--check] [--rpo-target S]");
		return usage;
	}
	return -1;
}

int cmd_status(int argc, char **argv)
{
	struct opts o = { 0 };
	int check = 0;
	int64_t rpo_target = 0;
	int r = parse_status(argc, argv, &o, &check, &rpo_target);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0) {
		if (check && !o.json)
			printf("FERRY UNKNOWN - cannot open vault %s\n", o.vault ?: "(none given)");
		return check ? HEALTH_UNKNOWN : 1;
	}
	_cleanup_free_ char *lines = NULL;
	size_t nlines = 0;
	struct status_ctx s = {
		.v = v,
		.json = o.json,
		.check = check,
		.rpo_target_s = rpo_target,
		.arr = json_object_new_array(),
		.now = ferry_now_ns(),
		.check_out = check && !o.json ? open_memstream(&lines, &nlines) : NULL,
	};
	if (check && !o.json && !s.check_out)
		return log_error_errno(-ENOMEM, "cannot check the VMs' health"), HEALTH_UNKNOWN;
	r = ferry_catalog_vm_list(ferry_vault_catalog(v), status_vm, &s);
	if (s.check_out && fclose(s.check_out) != 0 && r >= 0)
		r = -ENOMEM;
	if (r >= 0)
		groups_judge(&s);
	if (r >= 0 && o.json) {
		json_object *top = json_object_new_object();
		uint64_t bytes = 0;
		ferry_catalog_store_bytes(ferry_vault_catalog(v), &bytes);
		json_object_object_add(top, "vault", json_object_new_string(o.vault));
		json_object_object_add(top, "store_bytes", json_object_new_int64((int64_t)bytes));
		json_object_object_add(top, "vms", json_object_get(s.arr));
		json_object_object_add(top, "health",
				       json_object_new_string(health_state_name(s.worst)));
		groups_print(&s, top);
		puts(json_object_to_json_string_ext(top, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(top);
	} else if (r >= 0 && check) {
		unsigned n = s.count[0] + s.count[1] + s.count[2];
		printf("FERRY %s - %u VM%s: %u critical, %u warning, %u healthy\n",
		       health_nagios_name(s.worst), n, n == 1 ? "" : "s", s.count[HEALTH_CRITICAL],
		       s.count[HEALTH_WARNING], s.count[HEALTH_HEALTHY]);
		fputs(lines ?: "", stdout);
		groups_print(&s, NULL);
	} else if (r >= 0)
		groups_print(&s, NULL);
	json_object_put(s.arr);
	groups_free(&s);
	if (r < 0) {
		log_error_errno(r, "cannot read status");
		if (check && !o.json)
			printf("FERRY UNKNOWN - cannot read the status of vault %s: %s\n", o.vault,
			       strerror(-r));
		return check ? HEALTH_UNKNOWN : 1;
	}
	return check ? (int)s.worst : 0;
}
