/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The replicator's health recording and metrics (monitor.h). The health a
 * VM had is its "health" resource; a different state now is one small
 * transaction (resource and event). Store figures scan the object index,
 * so they are refreshed once a minute, not every pass. Counters (applied
 * bytes, errors, passes) live as long as the replicator: Prometheus takes
 * a restart's reset in its stride (rate(), increase()).
 */
#include "monitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "health.h"
#include "maint.h"
#include "metrics.h"
#include "observe.h"

#define STORE_STATS_EVERY_NS (60LL * 1000000000LL)

struct vm_counters {
	char name[FERRY_NAME_MAX + 1];
	struct replicate_stats st;
};

struct monitor {
	char *metrics_path;
	struct vm_counters *vms;
	size_t nvms;
	uint64_t passes;
	int64_t store_at_ns; /* monotonic; 0: never read */
	int have_store;
	uint64_t store_bytes;
	struct ferry_catalog_store_stats store;
};

int monitor_new(const char *metrics_path, struct monitor **ret)
{
	struct monitor *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (metrics_path && !(m->metrics_path = strdup(metrics_path))) {
		free(m);
		return -ENOMEM;
	}
	*ret = m;
	return 0;
}

struct monitor *monitor_free(struct monitor *m)
{
	if (!m)
		return NULL;
	free(m->metrics_path);
	free(m->vms);
	free(m);
	return NULL;
}

static struct vm_counters *counters(struct monitor *m, const char *vm)
{
	for (size_t i = 0; i < m->nvms; i++)
		if (strcmp(m->vms[i].name, vm) == 0)
			return &m->vms[i];
	struct vm_counters *n = realloc(m->vms, (m->nvms + 1) * sizeof(*n));
	if (!n)
		return NULL;
	m->vms = n;
	n = &m->vms[m->nvms++];
	*n = (struct vm_counters){ 0 };
	snprintf(n->name, sizeof(n->name), "%s", vm);
	return n;
}

struct replicate_stats *monitor_vm_stats(struct monitor *m, const char *vm)
{
	static struct replicate_stats spare; /* out of memory: counted nowhere */
	struct vm_counters *c = counters(m, vm);
	if (c)
		return &c->st;
	spare = (struct replicate_stats){ 0 };
	return &spare;
}

/* ---- health changes ---- */

/* A change of the VM's health since the last pass: its resource and an
 * event, together. The first judgement of a VM is recorded quietly when
 * healthy: a new VM has nothing to report. */
static void record_health(struct ferry_catalog *c, const struct ferry_vm *vm,
			  const struct health_report *h)
{
	char prev_s[16];
	enum health_state prev;
	int had = ferry_catalog_resource_get(c, vm->id, "health", prev_s, sizeof(prev_s)) >= 0 &&
		  health_state_parse(prev_s, &prev) >= 0;
	if (had && prev == h->state)
		return;
	char msg[1024], reasons[1024 - 64];
	health_reasons_join(h, reasons, sizeof(reasons));
	if (had)
		snprintf(msg, sizeof(msg), "health %s (was %s)%s%s", health_state_name(h->state),
			 health_state_name(prev), reasons[0] ? ": " : "", reasons);
	else
		snprintf(msg, sizeof(msg), "health %s%s%s", health_state_name(h->state),
			 reasons[0] ? ": " : "", reasons);
	const char *level = h->state == HEALTH_CRITICAL ? "error" :
			    h->state == HEALTH_WARNING  ? "warning" :
							  "info";
	int r = ferry_catalog_begin(c);
	if (r >= 0)
		r = ferry_catalog_resource_set(c, vm->id, "health", health_state_name(h->state));
	if (r >= 0 && (had || h->state != HEALTH_HEALTHY))
		r = ferry_catalog_event_add(c, vm->id, level, msg);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	if (r < 0) {
		ferry_catalog_rollback(c);
		log_warning_errno(r, "VM %s: cannot record its health (%s)", vm->name,
				  health_state_name(h->state));
		return;
	}
	if (had || h->state != HEALTH_HEALTHY)
		log_internal(h->state == HEALTH_HEALTHY ? LOG_INFO : LOG_WARNING, 0, "VM %s: %s",
			     vm->name, msg);
}

/* ---- metrics ---- */

static const struct {
	const char *name;
	enum metrics_type type;
	const char *help;
} families[] = {
	/* clang-format off */
	{ "ferry_vm_state", METRICS_GAUGE, "The VM's replication state: 1 for the state it is in, 0 for the others." },
	{ "ferry_health", METRICS_GAUGE, "The VM's health: 0 healthy, 1 warning, 2 critical (ferry status --check)." },
	{ "ferry_rpo_target_seconds", METRICS_GAUGE, "The VM's RPO target: lag above it is a warning, above twice it critical." },
	{ "ferry_lag_seconds", METRICS_GAUGE, "Age of the newest consistency marker applied to the vault (the RPO now)." },
	{ "ferry_cache_up", METRICS_GAUGE, "1 when the VM's cache answered the replicator, 0 when it did not." },
	{ "ferry_cache_pending_bytes", METRICS_GAUGE, "Bytes of segments waiting in the VM's cache." },
	{ "ferry_cache_pending_segments", METRICS_GAUGE, "Segments waiting in the VM's cache." },
	{ "ferry_applied_bytes_total", METRICS_COUNTER, "DATA bytes of the segments this replicator applied (rate() is the apply rate)." },
	{ "ferry_applied_segments_total", METRICS_COUNTER, "Segments this replicator applied." },
	{ "ferry_replicate_errors_total", METRICS_COUNTER, "Replication passes over the VM that ended at an error, by kind: cache, refused (a segment), other." },
	{ "ferry_recovery_points", METRICS_GAUGE, "Recovery points the vault holds for the VM." },
	{ "ferry_last_point_timestamp_seconds", METRICS_GAUGE, "Time of the VM's newest recovery point, by consistency (crash, app)." },
	{ "ferry_initial_replication_done_bytes", METRICS_GAUGE, "Bytes of the initial replication applied so far (VMs in initial replication)." },
	{ "ferry_initial_replication_total_bytes", METRICS_GAUGE, "Bytes the initial replication covers in all (VMs in initial replication)." },
	{ "ferry_agent_last_report_timestamp_seconds", METRICS_GAUGE, "When the VM's agent last put its status into the cache (the agent's clock)." },
	{ "ferry_agent_silent", METRICS_GAUGE, "1 when the agent's status is older than three of its cycles (and 30 s)." },
	{ "ferry_agent_last_cycle_failed", METRICS_GAUGE, "1 when the agent's last cycle failed." },
	{ "ferry_agent_last_cycle_duration_seconds", METRICS_GAUGE, "Duration of the agent's last completed cycle." },
	{ "ferry_agent_last_cycle_shipped_bytes", METRICS_GAUGE, "DATA bytes the agent's last completed cycle shipped." },
	{ "ferry_agent_source_waiting_bytes", METRICS_GAUGE, "Bytes written at the source and not shipped yet (qemu tracker)." },
	{ "ferry_agent_app_failing", METRICS_GAUGE, "1 when the agent's last app-consistent attempt failed." },
	{ "ferry_agent_app_last_success_timestamp_seconds", METRICS_GAUGE, "When the agent's last app-consistent marker succeeded." },
	{ "ferry_store_bytes", METRICS_GAUGE, "Bytes of pack files in the vault's store." },
	{ "ferry_store_unique_bytes", METRICS_GAUGE, "Plain bytes of the unique objects in the store (before compression)." },
	{ "ferry_store_logical_bytes", METRICS_GAUGE, "Disk sizes summed over every recovery point and live image." },
	{ "ferry_store_objects", METRICS_GAUGE, "Objects (chunks, map nodes, records) in the store." },
	{ "ferry_store_dedup_ratio", METRICS_GAUGE, "Logical bytes over unique bytes: what deduplication and sparse images save." },
	{ "ferry_replicator_passes_total", METRICS_COUNTER, "Passes this replicator ran." },
	{ "ferry_replicator_last_pass_timestamp_seconds", METRICS_GAUGE, "When this replicator's last pass ended." },
	/* clang-format on */
};

static const enum ferry_vm_state all_states[] = {
	FERRY_VM_INITIAL,     FERRY_VM_PROTECTED,       FERRY_VM_ERROR,
	FERRY_VM_FAILED_OVER, FERRY_VM_COMMITTED,       FERRY_VM_REPROTECTING,
	FERRY_VM_FAILED_BACK, FERRY_VM_RESYNC_REQUIRED, FERRY_VM_RESYNCING,
};

static double seconds(int64_t ns)
{
	return (double)ns / 1e9;
}

/* One VM's samples; the first error is kept in *err. */
static void vm_metrics(struct metrics *mt, const struct observation *o,
		       const struct health_report *h, const struct replicate_stats *st, int *err)
{
	const char *vm = o->vm.name;
	int r = 0;
#define ADD(...)                                             \
	do {                                                 \
		int k_ = metrics_add(mt, __VA_ARGS__, NULL); \
		if (k_ < 0 && r >= 0)                        \
			r = k_;                              \
	} while (0)
	for (size_t i = 0; i < ARRAY_SIZE(all_states); i++)
		ADD("ferry_vm_state", o->vm.state == all_states[i] ? 1 : 0, "vm", vm, "state",
		    ferry_vm_state_name(all_states[i]));
	ADD("ferry_health", (double)h->state, "vm", vm);
	ADD("ferry_rpo_target_seconds", (double)h->rpo_target_s, "vm", vm);
	if (h->lag_ns >= 0)
		ADD("ferry_lag_seconds", seconds(h->lag_ns), "vm", vm);
	ADD("ferry_cache_up", o->cache >= 0 ? 1 : 0, "vm", vm);
	if (o->cache >= 0) {
		ADD("ferry_cache_pending_bytes", (double)o->pending_bytes, "vm", vm);
		ADD("ferry_cache_pending_segments", (double)o->pending_segments, "vm", vm);
	}
	ADD("ferry_applied_bytes_total", (double)st->applied_bytes, "vm", vm);
	ADD("ferry_applied_segments_total", (double)st->applied_segments, "vm", vm);
	ADD("ferry_replicate_errors_total", (double)st->cache_errors, "vm", vm, "kind", "cache");
	ADD("ferry_replicate_errors_total", (double)st->refused, "vm", vm, "kind", "refused");
	ADD("ferry_replicate_errors_total", (double)st->other_errors, "vm", vm, "kind", "other");
	ADD("ferry_recovery_points", (double)o->points, "vm", vm);
	if (o->have_crash)
		ADD("ferry_last_point_timestamp_seconds", seconds(o->last_crash.time_ns), "vm", vm,
		    "consistency", "crash");
	if (o->have_app)
		ADD("ferry_last_point_timestamp_seconds", seconds(o->last_app.time_ns), "vm", vm,
		    "consistency", "app");
	if (o->vm.state == FERRY_VM_INITIAL) {
		ADD("ferry_initial_replication_done_bytes", (double)o->vm.initial_done_bytes, "vm",
		    vm);
		ADD("ferry_initial_replication_total_bytes", (double)o->vm.initial_total_bytes,
		    "vm", vm);
	}
	if (o->agent > 0) {
		const struct ferry_agent_status *a = &o->status;
		ADD("ferry_agent_last_report_timestamp_seconds", seconds(a->written_ns), "vm", vm);
		ADD("ferry_agent_silent", health_agent_silent(a, ferry_now_ns()), "vm", vm);
		ADD("ferry_agent_last_cycle_failed", a->error ? 1 : 0, "vm", vm);
		if (a->cycle) {
			ADD("ferry_agent_last_cycle_duration_seconds", seconds(a->duration_ns),
			    "vm", vm);
			ADD("ferry_agent_last_cycle_shipped_bytes", (double)a->shipped_bytes, "vm",
			    vm);
		}
		if (a->source_waiting_bytes != FERRY_STATUS_UNKNOWN)
			ADD("ferry_agent_source_waiting_bytes", (double)a->source_waiting_bytes,
			    "vm", vm);
		ADD("ferry_agent_app_failing", a->app_error ? 1 : 0, "vm", vm);
		if (a->app_ok_ns > 0)
			ADD("ferry_agent_app_last_success_timestamp_seconds", seconds(a->app_ok_ns),
			    "vm", vm);
	}
#undef ADD
	if (r < 0 && *err >= 0)
		*err = r;
}

static void store_metrics(struct monitor *m, struct ferry_catalog *c, struct metrics *mt, int *err)
{
	int64_t now = ferry_mono_ns();
	if (!m->have_store || now - m->store_at_ns >= STORE_STATS_EVERY_NS) {
		int r = ferry_catalog_store_bytes(c, &m->store_bytes);
		if (r >= 0)
			r = ferry_catalog_store_stats(c, &m->store);
		if (r < 0)
			log_warning_errno(r, "cannot read the store's figures for the metrics");
		m->have_store = r >= 0;
		m->store_at_ns = now;
	}
	if (!m->have_store)
		return;
	int r = metrics_add(mt, "ferry_store_bytes", (double)m->store_bytes, NULL);
	if (r >= 0)
		r = metrics_add(mt, "ferry_store_unique_bytes", (double)m->store.unique_bytes,
				NULL);
	if (r >= 0)
		r = metrics_add(mt, "ferry_store_logical_bytes", (double)m->store.logical_bytes,
				NULL);
	if (r >= 0)
		r = metrics_add(mt, "ferry_store_objects", (double)m->store.objects, NULL);
	if (r >= 0 && m->store.unique_bytes)
		r = metrics_add(mt, "ferry_store_dedup_ratio",
				(double)m->store.logical_bytes / (double)m->store.unique_bytes,
				NULL);
	if (r < 0 && *err >= 0)
		*err = r;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct metrics *, metrics_free)

int monitor_pass(struct monitor *m, struct ferry_vault *v, int64_t now_ns)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	_cleanup_free_ struct ferry_vm *vms = NULL;
	size_t n;
	int r = maint_list_vms(v, &vms, &n);
	if (r < 0)
		return log_error_errno(r, "cannot list VMs to judge their health");
	m->passes++;

	_cleanup_(metrics_freep) struct metrics *mt = NULL;
	int err = 0;
	if (m->metrics_path) {
		err = metrics_new(&mt);
		for (size_t i = 0; err >= 0 && i < ARRAY_SIZE(families); i++)
			err = metrics_declare(mt, families[i].name, families[i].type,
					      families[i].help);
	}
	_cleanup_free_ struct observation *o = malloc(sizeof(*o));
	if (!o)
		return log_error_errno(-ENOMEM, "cannot judge the VMs' health");
	for (size_t i = 0; i < n; i++) {
		r = observe_vm_open(c, &vms[i], o);
		if (r < 0) {
			log_warning_errno(r, "VM %s: cannot judge its health", vms[i].name);
			continue;
		}
		struct health_report h;
		observe_health(o, now_ns, 0, &h);
		record_health(c, &vms[i], &h);
		if (mt && err >= 0)
			vm_metrics(mt, o, &h, monitor_vm_stats(m, vms[i].name), &err);
	}
	if (!mt)
		return 0;
	if (err >= 0)
		store_metrics(m, c, mt, &err);
	if (err >= 0)
		err = metrics_add(mt, "ferry_replicator_passes_total", (double)m->passes, NULL);
	if (err >= 0)
		err = metrics_add(mt, "ferry_replicator_last_pass_timestamp_seconds",
				  seconds(ferry_now_ns()), NULL);
	if (err >= 0)
		err = metrics_write(mt, m->metrics_path);
	if (err < 0)
		log_warning_errno(err, "cannot write the metrics file %s", m->metrics_path);
	return 0;
}
