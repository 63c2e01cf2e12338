/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry-agent's metrics file (--metrics-file): what its cycles did, counted
 * since it started, and what its last cycle was, as the status it puts
 * into the cache says (metrics.h writes the Prometheus textfile format;
 * the names are listed in ferry-agent(8), METRICS). Internal to ferry-agent.
 */
#pragma once

#include <stdint.h>

#include "agent-scan.h"
#include "ferry/cache.h"

/* Why a cycle failed, as ferry_agent_errors_total{kind} counts it. */
enum agent_error_kind {
	AGENT_ERROR_TRANSIENT, /* the cache or qemu away for a while: retried */
	AGENT_ERROR_LEASE,     /* another agent holds the VM's lease */
	AGENT_ERROR_RESYNC,    /* the vault asked for a resync (ESTALE) */
	AGENT_ERROR_CYCLE,     /* anything else that failed a cycle */
	AGENT_ERROR_APP,       /* an app-consistent attempt that failed */
	AGENT_ERROR_KINDS
};

struct agent_counters {
	uint64_t cycles; /* completed */
	uint64_t shipped_bytes, segments, read_bytes;
	uint64_t errors[AGENT_ERROR_KINDS];
	int64_t app_attempt_ns; /* the last app attempt counted */
};

enum agent_error_kind agent_error_kind(int r);
/* Counts one cycle: r as the trackers return it (> 0 complete, < 0 failed,
 * 0 stopped), st its figures (of this run), and a new failed app-consistent
 * attempt in st. */
void agent_counters_add(struct agent_counters *c, int r, const struct agent_scan_stats *st);
/* Writes the file for vm atomically; last is the status last put (NULL
 * before any). -errno. */
int agent_metrics_write(const char *path, const char *vm, const struct agent_counters *c,
			const struct ferry_agent_status *last);
