/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the target can see of one VM's replication, gathered in one place
 * for `ferry status` and ferry-replicator's health and metrics: its
 * catalog row, points and settings (tracker, RPO target, group), what
 * waits in its cache, and what its agent last said about itself (its
 * status blob there). Reads only: the catalog and the cache are left as
 * they are.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "health.h"

struct observation {
	struct ferry_vm vm;
	/* Recovery points: how many, the newest, and the newest of each
	 * consistency. */
	unsigned points;
	int have_last, have_crash, have_app;
	struct ferry_point last, last_crash, last_app;
	char tracker[16];               /* "scan" for VMs from before trackers */
	char group[FERRY_NAME_MAX + 1]; /* its consistency group; "" none */
	int64_t rpo_target_s;           /* its own, or the default */
	int rpo_target_own;             /* 1: from its rpo-target resource */
	int have_resync;                /* resync holds its latest resync */
	struct ferry_vm_resync resync;
	/* 0: the cache answered; -errno: it could not be opened or listed. */
	int cache;
	size_t pending_segments;
	uint64_t pending_bytes;
	/* 1: status is the agent's; 0: none there (or the cache could not
	 * be opened); -errno: unreadable. */
	int agent;
	struct ferry_agent_status status;
};

/*
 * Fills ret for vm from catalog c and from cache, an open handle on the
 * VM's cache, or NULL when it could not be opened (cache_error then says
 * why, -errno). Only the catalog's errors fail it; what the cache does not
 * give is recorded in ret.
 */
int observe_vm(struct ferry_catalog *c, const struct ferry_vm *vm, struct ferry_cache *cache,
	       int cache_error, struct observation *ret);
/* As observe_vm, opening (and closing) the VM's cache itself. */
int observe_vm_open(struct ferry_catalog *c, const struct ferry_vm *vm, struct observation *ret);

/* Judges o (health.h) at now_ns against its RPO target, or against
 * rpo_target_s when that is > 0. */
void observe_health(const struct observation *o, int64_t now_ns, int64_t rpo_target_s,
		    struct health_report *ret);
