/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The figures of agent-metrics.h, one family each. Every error kind is
 * written from the start, at 0, so that a rate() over it exists before
 * the first error; a figure the agent does not know (bytes waiting at the
 * source for the scan tracker, a cycle before the first) is left out
 * rather than written as 0.
 */
#include "agent-metrics.h"

#include <errno.h>

#include "ferry/util.h"
#include "metrics.h"

static const char *const kind_names[AGENT_ERROR_KINDS] = {
	[AGENT_ERROR_TRANSIENT] = "transient",
	[AGENT_ERROR_LEASE] = "lease",
	[AGENT_ERROR_RESYNC] = "resync",
	[AGENT_ERROR_CYCLE] = "cycle",
	[AGENT_ERROR_APP] = "app",
};

enum agent_error_kind agent_error_kind(int r)
{
	switch (-r) {
	case ENOLCK:
	case EBUSY:
		return AGENT_ERROR_LEASE;
	case ESTALE:
		return AGENT_ERROR_RESYNC;
	case EAGAIN:
	case ETIMEDOUT:
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
		return AGENT_ERROR_TRANSIENT;
	default:
		return AGENT_ERROR_CYCLE;
	}
}

void agent_counters_add(struct agent_counters *c, int r, const struct agent_scan_stats *st)
{
	if (r > 0)
		c->cycles++;
	else if (r < 0)
		c->errors[agent_error_kind(r)]++;
	c->shipped_bytes += st->shipped_bytes;
	c->segments += st->segments;
	c->read_bytes += st->scanned_bytes;
	if (st->app_attempt_ns > c->app_attempt_ns) {
		c->app_attempt_ns = st->app_attempt_ns;
		if (st->app_error)
			c->errors[AGENT_ERROR_APP]++;
	}
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct metrics *, metrics_free)

static const struct {
	const char *name;
	enum metrics_type type;
	const char *help;
} families[] = {
	/* clang-format off */
	{ "ferry_agent_cycles_total", METRICS_COUNTER, "Cycles this agent completed." },
	{ "ferry_agent_errors_total", METRICS_COUNTER, "Failed cycles by kind (transient, lease, resync, cycle) and failed app-consistent attempts (app)." },
	{ "ferry_agent_shipped_bytes_total", METRICS_COUNTER, "DATA bytes this agent shipped into the cache, before compression." },
	{ "ferry_agent_segments_total", METRICS_COUNTER, "Segments this agent put into the cache." },
	{ "ferry_agent_read_bytes_total", METRICS_COUNTER, "Disk bytes this agent read." },
	{ "ferry_agent_cycle_duration_seconds", METRICS_GAUGE, "Duration of the last completed cycle." },
	{ "ferry_agent_last_marker_timestamp_seconds", METRICS_GAUGE, "Time of the consistency marker of the last completed cycle." },
	{ "ferry_agent_source_waiting_bytes", METRICS_GAUGE, "Bytes written at the source and not shipped yet (qemu tracker)." },
	{ "ferry_agent_last_cycle_failed", METRICS_GAUGE, "1 when the last cycle failed." },
	{ "ferry_agent_interval_seconds", METRICS_GAUGE, "Seconds between cycle starts." },
	{ "ferry_agent_app_failing", METRICS_GAUGE, "1 when the last app-consistent attempt failed." },
	{ "ferry_agent_app_last_success_timestamp_seconds", METRICS_GAUGE, "When the last app-consistent marker succeeded." },
	{ "ferry_agent_last_report_timestamp_seconds", METRICS_GAUGE, "When this file was written: after every cycle." },
	/* clang-format on */
};

int agent_metrics_write(const char *path, const char *vm, const struct agent_counters *c,
			const struct ferry_agent_status *last)
{
	_cleanup_(metrics_freep) struct metrics *m = NULL;
	int r = metrics_new(&m);
	for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(families); i++)
		r = metrics_declare(m, families[i].name, families[i].type, families[i].help);
#define ADD(...)                                               \
	do {                                                   \
		if (r >= 0)                                    \
			r = metrics_add(m, __VA_ARGS__, NULL); \
	} while (0)
	ADD("ferry_agent_cycles_total", (double)c->cycles, "vm", vm);
	for (size_t k = 0; k < AGENT_ERROR_KINDS; k++)
		ADD("ferry_agent_errors_total", (double)c->errors[k], "vm", vm, "kind",
		    kind_names[k]);
	ADD("ferry_agent_shipped_bytes_total", (double)c->shipped_bytes, "vm", vm);
	ADD("ferry_agent_segments_total", (double)c->segments, "vm", vm);
	ADD("ferry_agent_read_bytes_total", (double)c->read_bytes, "vm", vm);
	if (last) {
		if (last->cycle) {
			ADD("ferry_agent_cycle_duration_seconds", (double)last->duration_ns / 1e9,
			    "vm", vm);
			ADD("ferry_agent_last_marker_timestamp_seconds",
			    (double)last->marker_ns / 1e9, "vm", vm);
		}
		if (last->source_waiting_bytes != FERRY_STATUS_UNKNOWN)
			ADD("ferry_agent_source_waiting_bytes", (double)last->source_waiting_bytes,
			    "vm", vm);
		ADD("ferry_agent_last_cycle_failed", last->error ? 1 : 0, "vm", vm);
		ADD("ferry_agent_interval_seconds", (double)last->interval_s, "vm", vm);
		ADD("ferry_agent_app_failing", last->app_error ? 1 : 0, "vm", vm);
		if (last->app_ok_ns > 0)
			ADD("ferry_agent_app_last_success_timestamp_seconds",
			    (double)last->app_ok_ns / 1e9, "vm", vm);
	}
	ADD("ferry_agent_last_report_timestamp_seconds", (double)ferry_now_ns() / 1e9, "vm", vm);
#undef ADD
	if (r >= 0)
		r = metrics_write(m, path);
	return r;
}
