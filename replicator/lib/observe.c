/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Gathering what observe.h describes: one listing of the VM's points, a
 * few resources, one listing of its cache and one read of its agent's
 * status. A resource that does not parse (an RPO target edited by hand)
 * counts as absent: the default applies.
 */
#include "observe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/changelog.h"
#include "ferry/util.h"

static int note_point(const struct ferry_point *p, void *userdata)
{
	struct observation *o = userdata;
	o->points++;
	o->last = *p;
	o->have_last = 1;
	if (p->consistency == FERRY_CONSISTENCY_APP) {
		o->last_app = *p;
		o->have_app = 1;
	} else {
		o->last_crash = *p;
		o->have_crash = 1;
	}
	return 0;
}

int observe_vm(struct ferry_catalog *c, const struct ferry_vm *vm, struct ferry_cache *cache,
	       int cache_error, struct observation *ret)
{
	_cleanup_free_ struct observation *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->vm = *vm;
	int r = ferry_catalog_point_list(c, vm->id, note_point, o);
	if (r < 0)
		return r;
	/* enable-replication records the tracker; VMs from before it scan. */
	if (ferry_catalog_resource_get(c, vm->id, "tracker", o->tracker, sizeof(o->tracker)) < 0)
		snprintf(o->tracker, sizeof(o->tracker), "scan");
	if (ferry_catalog_resource_get(c, vm->id, "group", o->group, sizeof(o->group)) < 0 ||
	    !ferry_name_valid(o->group))
		o->group[0] = 0;
	o->have_resync = ferry_catalog_resync_get(c, vm->id, &o->resync) >= 0;

	if (cache) {
		uint64_t *seqs = NULL;
		o->cache = ferry_cache_list_segments(cache, vm->name, &seqs, &o->pending_segments,
						     &o->pending_bytes);
		free(seqs);
		if (o->cache > 0)
			o->cache = 0;
		r = ferry_cache_get_status(cache, vm->name, &o->status);
		o->agent = r >= 0 ? 1 : r == -ENOENT ? 0 : r;
	} else {
		/* Nothing could be read, so nothing is known of the agent. */
		o->cache = cache_error < 0 ? cache_error : -EIO;
		o->agent = 0;
	}
	if (o->cache < 0)
		o->pending_segments = o->pending_bytes = 0;

	char value[32];
	if (ferry_catalog_resource_get(c, vm->id, "rpo-target", value, sizeof(value)) >= 0 &&
	    health_parse_rpo_target(value, &o->rpo_target_s) >= 0)
		o->rpo_target_own = 1;
	else
		o->rpo_target_s = health_default_rpo_target(vm, o->agent > 0 ? &o->status : NULL,
							    strcmp(o->tracker, "qemu") == 0);
	*ret = *o;
	return 0;
}

int observe_vm_open(struct ferry_catalog *c, const struct ferry_vm *vm, struct observation *ret)
{
	_cleanup_(ferry_cache_freep) struct ferry_cache *cache = NULL;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	return observe_vm(c, vm, r >= 0 ? cache : NULL, r, ret);
}

void observe_health(const struct observation *o, int64_t now_ns, int64_t rpo_target_s,
		    struct health_report *ret)
{
	const struct health_input in = {
		.vm = &o->vm,
		.now_ns = now_ns,
		.rpo_target_s = rpo_target_s > 0 ? rpo_target_s : o->rpo_target_s,
		.cache = o->cache,
		.agent = o->agent,
		.status = o->agent > 0 ? &o->status : NULL,
		.last_app_ns = o->have_app ? o->last_app.time_ns : 0,
		.resync_reason = o->have_resync ? o->resync.reason : NULL,
	};
	health_evaluate(&in, ret);
}
