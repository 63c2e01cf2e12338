/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VM's replication health: from what the target sees of it (its catalog
 * row, its agent's status blob, whether its cache answers, its newest
 * app-consistent point) and its RPO target, one state, healthy, warning or
 * critical, and the reasons for it, in words a person can act on. Pure: no
 * I/O and no clock; `ferry status` judges with it, and ferry-replicator
 * each pass, recording the changes as events. The rules (thresholds and
 * defaults) are listed in ferry(1), HEALTH, and at health_evaluate below.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/cache.h"
#include "ferry/catalog.h"

/* Ordered: a worse state is a larger number; also the Nagios exit codes. */
enum health_state {
	HEALTH_HEALTHY = 0,
	HEALTH_WARNING = 1,
	HEALTH_CRITICAL = 2,
};
/* The exit code of `ferry status --check` when it cannot tell. */
#define HEALTH_UNKNOWN 3

/* The RPO target's bounds, seconds, and its floor when defaulted. */
#define HEALTH_RPO_TARGET_MAX (366 * 24 * 3600)
#define HEALTH_RPO_TARGET_MIN_DEFAULT 60

/* What health_evaluate judges. Only vm, now_ns and rpo_target_s are
 * required; the rest says what could be seen. */
struct health_input {
	const struct ferry_vm *vm;
	int64_t now_ns;
	int64_t rpo_target_s; /* > 0 */
	/* 0: the cache answered; -errno: it could not be opened or listed
	 * (the agent fields are then not judged: nobody could read them). */
	int cache;
	/* 1: status holds the agent's status; 0: it never reported;
	 * -errno: its status could not be read (damaged, a newer major). */
	int agent;
	const struct ferry_agent_status *status;
	int64_t last_app_ns;       /* the newest app-consistent point, 0: none */
	const char *resync_reason; /* the VM's resync, when it has one; may be NULL */
};

enum health_kind {
	HEALTH_KIND_LAG,
	HEALTH_KIND_INITIAL,      /* no marker applied yet */
	HEALTH_KIND_STATE,        /* not replicating into this vault */
	HEALTH_KIND_VM_ERROR,     /* the vault refused what came (state error) */
	HEALTH_KIND_RESYNC,       /* resync required or in progress */
	HEALTH_KIND_CACHE,        /* the cache did not answer */
	HEALTH_KIND_AGENT_SILENT, /* no status for several cycles */
	HEALTH_KIND_AGENT_ERROR,  /* the agent's last cycle failed */
	HEALTH_KIND_AGENT_STATUS, /* its status unreadable */
	HEALTH_KIND_APP,          /* app-consistent points failing */
};

#define HEALTH_MAX_REASONS 10
/* A reason's text: control characters escaped, messages cut to fit. */
#define HEALTH_REASON_MAX 640

struct health_reason {
	enum health_state level;
	enum health_kind kind;
	char text[HEALTH_REASON_MAX];
};

struct health_report {
	enum health_state state; /* the worst reason's level; healthy without one */
	int64_t rpo_target_s;
	int64_t lag_ns; /* now minus the newest applied marker; -1: none yet */
	size_t n;
	struct health_reason reasons[HEALTH_MAX_REASONS];
};

/*
 * Judges one VM (in order of the reasons it gives):
 * - state: error is critical (with the vault's error); resync required or
 *   resyncing a warning (with its reason); initial replication a warning
 *   (no recovery point yet); failed over, committed, re-protecting or
 *   failed back a warning (not replicating into this vault: nothing below
 *   is judged).
 * - lag, the age of the newest applied consistency marker: a warning over
 *   the RPO target, critical over twice the target.
 * - the cache: critical when it did not answer.
 * - the agent: a warning when silent (health_agent_silent), when its last
 *   cycle failed (with its message), or when its status is unreadable.
 * - app-consistent points: a warning when the agent's last attempt failed
 *   (with its message), or, with an app interval, when the newest
 *   app-consistent point is older than twice that interval (or there is
 *   none, and replication has been enabled that long).
 */
void health_evaluate(const struct health_input *in, struct health_report *ret);

/* The RPO target of a VM without one of its own: three of the agent's
 * cycle periods (its interval, or its last cycle's duration when longer),
 * and at least HEALTH_RPO_TARGET_MIN_DEFAULT. Without a status from the
 * agent, the interval `ferry enable-replication` gives it by default (qemu:
 * 2 s; scan: the crash interval, or 60 s). */
int64_t health_default_rpo_target(const struct ferry_vm *vm, const struct ferry_agent_status *st,
				  int qemu);
/* A target as the rpo-target resource and --rpo-target hold it: decimal
 * seconds, 1 to HEALTH_RPO_TARGET_MAX. -EINVAL or -ERANGE otherwise. */
int health_parse_rpo_target(const char *s, int64_t *ret);

/* Whether the agent has gone silent at now: its status is older than three
 * of its cycles (interval plus the last cycle's duration), and at least
 * 30 s; a status is put once a cycle, and one put may be slow or fail. */
int health_agent_silent(const struct ferry_agent_status *st, int64_t now_ns);

/* "healthy", "warning", "critical"; health_state_parse is its inverse
 * (-EINVAL for anything else). */
const char *health_state_name(enum health_state s);
int health_state_parse(const char *s, enum health_state *ret);
/* The Nagios word: OK, WARNING, CRITICAL. */
const char *health_nagios_name(enum health_state s);

/* The reasons joined with "; " (cut short to fit), or "" without any. */
void health_reasons_join(const struct health_report *h, char *buf, size_t size);

/* A duration as a person reads it: 45s, 12m05s, 3h20m, 2d04h. */
void health_format_duration(int64_t ns, char *buf, size_t size);
