/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The health rules of health.h: one pass over what the target sees of a
 * VM, adding a reason per thing wrong, each at its level. Every figure
 * from the source (times, intervals, messages) may be anything, so the
 * arithmetic saturates and the messages are escaped and cut to fit.
 */
#include "health.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ferry/log.h"
#include "ferry/util.h"

#define NS 1000000000LL

static void add(struct health_report *h, enum health_state level, enum health_kind kind,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void add(struct health_report *h, enum health_state level, enum health_kind kind,
		const char *fmt, ...)
{
	if (level > h->state)
		h->state = level;
	if (h->n == HEALTH_MAX_REASONS)
		return;
	struct health_reason *r = &h->reasons[h->n++];
	r->level = level;
	r->kind = kind;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
}

void health_format_duration(int64_t ns, char *buf, size_t size)
{
	int64_t s = ns > 0 ? ns / NS : 0;
	if (s < 120)
		snprintf(buf, size, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, size, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 2 * 86400)
		snprintf(buf, size, "%lldh%02lldm", (long long)(s / 3600),
			 (long long)(s / 60 % 60));
	else
		snprintf(buf, size, "%lldd%02lldh", (long long)(s / 86400),
			 (long long)(s / 3600 % 24));
}

int health_agent_silent(const struct ferry_agent_status *st, int64_t now_ns)
{
	int64_t age = MAX(ferry_time_since(now_ns, st->written_ns), INT64_C(0));
	/* In double: the figures come from the source and may be anything. */
	double cycle_s = (double)st->interval_s + (double)st->duration_ns / 1e9;
	return (double)age / 1e9 > MAX(3 * cycle_s, 30.0);
}

int64_t health_default_rpo_target(const struct ferry_vm *vm, const struct ferry_agent_status *st,
				  int qemu)
{
	double period;
	if (st)
		period = MAX((double)st->interval_s, (double)st->duration_ns / 1e9);
	else
		period = qemu                     ? 2.0 :
			 vm->crash_interval_s > 0 ? (double)vm->crash_interval_s :
						    60.0;
	double t = 3 * period;
	if (t > HEALTH_RPO_TARGET_MAX)
		return HEALTH_RPO_TARGET_MAX;
	return MAX((int64_t)t, (int64_t)HEALTH_RPO_TARGET_MIN_DEFAULT);
}

int health_parse_rpo_target(const char *s, int64_t *ret)
{
	uint64_t v;
	int r = ferry_parse_u64(s, strlen(s), HEALTH_RPO_TARGET_MAX, &v);
	if (r < 0)
		return r;
	if (v == 0)
		return -ERANGE;
	*ret = (int64_t)v;
	return 0;
}

const char *health_state_name(enum health_state s)
{
	return s == HEALTH_HEALTHY ? "healthy" : s == HEALTH_WARNING ? "warning" : "critical";
}

const char *health_nagios_name(enum health_state s)
{
	return s == HEALTH_HEALTHY ? "OK" : s == HEALTH_WARNING ? "WARNING" : "CRITICAL";
}

int health_state_parse(const char *s, enum health_state *ret)
{
	for (int i = HEALTH_HEALTHY; i <= HEALTH_CRITICAL; i++)
		if (strcmp(s, health_state_name(i)) == 0) {
			*ret = i;
			return 0;
		}
	return -EINVAL;
}

void health_reasons_join(const struct health_report *h, char *buf, size_t size)
{
	size_t o = 0;
	if (size == 0)
		return;
	buf[0] = 0;
	for (size_t i = 0; i < h->n && o + 1 < size; i++) {
		int k = snprintf(buf + o, size - o, "%s%s", i ? "; " : "", h->reasons[i].text);
		if (k < 0)
			break;
		o += MIN((size_t)k, size - o - 1);
	}
}

/* The VM's state: whether the rest is judged at all. */
static int judge_state(const struct health_input *in, struct health_report *h)
{
	const struct ferry_vm *vm = in->vm;
	char e[HEALTH_REASON_MAX - 64];
	switch (vm->state) {
	case FERRY_VM_PROTECTED:
		return 1;
	case FERRY_VM_INITIAL: {
		double pct = vm->initial_total_bytes ? 100.0 * (double)vm->initial_done_bytes /
							       (double)vm->initial_total_bytes :
						       0.0;
		add(h, HEALTH_WARNING, HEALTH_KIND_INITIAL,
		    "initial replication, no recovery point yet (%.1f%% applied)", MIN(pct, 100.0));
		return 1;
	}
	case FERRY_VM_ERROR:
		add(h, HEALTH_CRITICAL, HEALTH_KIND_VM_ERROR, "VM in error: %s",
		    vm->error[0] ? log_escape(vm->error, e, sizeof(e)) : "(no message)");
		return 1;
	case FERRY_VM_RESYNC_REQUIRED:
	case FERRY_VM_RESYNCING: {
		const char *why = in->resync_reason && in->resync_reason[0] ? in->resync_reason :
									      vm->error;
		add(h, HEALTH_WARNING, HEALTH_KIND_RESYNC, "%s%s%s",
		    vm->state == FERRY_VM_RESYNCING ? "resyncing" : "resync required",
		    why[0] ? ": " : "", log_escape(why, e, sizeof(e)));
		return 1;
	}
	default:
		add(h, HEALTH_WARNING, HEALTH_KIND_STATE, "not replicating into this vault (%s)",
		    ferry_vm_state_name(vm->state));
		return 0;
	}
}

static void judge_lag(const struct health_input *in, struct health_report *h)
{
	if (h->lag_ns < 0)
		return;
	char lag[32], target[32];
	health_format_duration(h->lag_ns, lag, sizeof(lag));
	health_format_duration(ferry_seconds_ns(in->rpo_target_s), target, sizeof(target));
	/* In seconds: the target is at most a year, so twice it fits. */
	int64_t lag_s = h->lag_ns / NS;
	if (lag_s > 2 * in->rpo_target_s)
		add(h, HEALTH_CRITICAL, HEALTH_KIND_LAG, "lag %s is over twice the RPO target %s",
		    lag, target);
	else if (lag_s > in->rpo_target_s)
		add(h, HEALTH_WARNING, HEALTH_KIND_LAG, "lag %s is over the RPO target %s", lag,
		    target);
}

static void judge_agent(const struct health_input *in, struct health_report *h)
{
	const struct ferry_agent_status *st = in->status;
	char when[FERRY_TIME_STRING_SIZE], age[32], msg[HEALTH_REASON_MAX - 96];
	if (in->agent < 0) {
		add(h, HEALTH_WARNING, HEALTH_KIND_AGENT_STATUS,
		    "the agent's status is unreadable: %s", strerror(-in->agent));
		return;
	}
	if (in->agent == 0 || !st)
		return;
	health_format_duration(ferry_time_since(in->now_ns, st->written_ns), age, sizeof(age));
	if (health_agent_silent(st, in->now_ns)) {
		ferry_format_time(st->written_ns, when, sizeof(when));
		add(h, HEALTH_WARNING, HEALTH_KIND_AGENT_SILENT,
		    "agent silent since %s (%s ago; it reports every %us)", when, age,
		    st->interval_s);
	} else if (st->error)
		add(h, HEALTH_WARNING, HEALTH_KIND_AGENT_ERROR,
		    "agent's last cycle failed %s ago: %s", age,
		    st->message[0] ? log_escape(st->message, msg, sizeof(msg)) :
				     strerror(st->error));
}

static void judge_app(const struct health_input *in, struct health_report *h)
{
	const struct ferry_vm *vm = in->vm;
	const struct ferry_agent_status *st = in->agent > 0 ? in->status : NULL;
	char age[32], msg[HEALTH_REASON_MAX - 96];
	if (st && st->app_error) {
		health_format_duration(ferry_time_since(in->now_ns, st->app_attempt_ns), age,
				       sizeof(age));
		add(h, HEALTH_WARNING, HEALTH_KIND_APP, "app-consistent point failed %s ago: %s",
		    age,
		    st->app_message[0] ? log_escape(st->app_message, msg, sizeof(msg)) :
					 strerror(st->app_error));
		return;
	}
	if (vm->app_interval_s <= 0 || vm->state == FERRY_VM_INITIAL)
		return;
	char interval[32];
	int64_t limit = ferry_seconds_ns(vm->app_interval_s > INT64_MAX / 2 / NS ?
						 INT64_MAX / 2 / NS :
						 2 * vm->app_interval_s);
	health_format_duration(ferry_seconds_ns(vm->app_interval_s), interval, sizeof(interval));
	if (in->last_app_ns > 0) {
		int64_t since = ferry_time_since(in->now_ns, in->last_app_ns);
		if (since > limit) {
			health_format_duration(since, age, sizeof(age));
			add(h, HEALTH_WARNING, HEALTH_KIND_APP,
			    "no app-consistent point for %s (app interval %s)", age, interval);
		}
	} else if (ferry_time_since(in->now_ns, vm->created_ns) > limit) {
		health_format_duration(ferry_time_since(in->now_ns, vm->created_ns), age,
				       sizeof(age));
		add(h, HEALTH_WARNING, HEALTH_KIND_APP,
		    "no app-consistent point yet, %s after replication was enabled (app interval "
		    "%s)",
		    age, interval);
	}
}

void health_evaluate(const struct health_input *in, struct health_report *ret)
{
	struct health_report h = {
		.state = HEALTH_HEALTHY,
		.rpo_target_s = in->rpo_target_s,
		.lag_ns = in->vm->marker_ns > 0 ?
				  MAX(ferry_time_since(in->now_ns, in->vm->marker_ns), INT64_C(0)) :
				  -1,
	};
	if (judge_state(in, &h)) {
		judge_lag(in, &h);
		if (in->cache < 0) {
			char url[HEALTH_REASON_MAX - 96];
			add(&h, HEALTH_CRITICAL, HEALTH_KIND_CACHE, "cache %s unreachable: %s",
			    log_escape(in->vm->cache_url, url, sizeof(url)), strerror(-in->cache));
		} else {
			judge_agent(in, &h);
			judge_app(in, &h);
		}
	}
	*ret = h;
}
