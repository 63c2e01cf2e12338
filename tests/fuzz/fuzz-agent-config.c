/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the agent configuration file (agentconf_load in
 * replicator/lib/agentconf.c: inih fed line by line). The input becomes
 * the configuration file (a memfd, opened by path as the agent does). A
 * file that loads must describe a usable agent: every required key, 1..256
 * disks with valid, distinct names and a path each, an interval and a
 * chunk size within bounds, a group only with the qemu tracker. And it must survive the writer: what
 * agentconf_format accepts, agentconf_load reads back the same, and the
 * writer refuses a loaded configuration only for a line too long, or for
 * a value starting with ';' (read from "key=;v", written "key = ;v" it
 * would be a comment); every other rule it applies, the reader applied.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "agentconf.h"
#include "ferry/log.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct agentconf *c)
{
	if (!c->vm || !ferry_name_valid(c->vm) || !c->cache || !*c->cache || !c->state ||
	    !*c->state || c->interval > AGENTCONF_MAX_INTERVAL || c->ndisks == 0 ||
	    c->ndisks > AGENTCONF_MAX_DISKS)
		abort();
	if (c->has_chunk_size && c->chunk_size &&
	    (c->chunk_size < 4096 || c->chunk_size > AGENTCONF_MAX_CHUNK_SIZE ||
	     (c->chunk_size & (c->chunk_size - 1))))
		abort();
	if (c->group && (!ferry_name_valid(c->group) || c->tracker != AGENTCONF_TRACKER_QEMU))
		abort();
	if (c->group_interval == 0 || c->group_interval > AGENTCONF_MAX_INTERVAL ||
	    c->group_pause_limit_ms == 0 ||
	    c->group_pause_limit_ms > AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS)
		abort();
	for (size_t i = 0; i < c->ndisks; i++) {
		const struct agent_disk *d = &c->disks[i];
		if (!d->name || !ferry_name_valid(d->name) || !d->path || !*d->path)
			abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->disks[j].name, d->name) == 0)
				abort();
	}
}

/* What the writer writes; [credentials] it never writes. */
static void check_same(const struct agentconf *a, const struct agentconf *b)
{
	if (strcmp(a->vm, b->vm) != 0 || strcmp(a->cache, b->cache) != 0 ||
	    strcmp(a->state, b->state) != 0 || a->interval != b->interval ||
	    a->has_chunk_size != b->has_chunk_size || a->chunk_size != b->chunk_size ||
	    a->ndisks != b->ndisks)
		abort();
	if (!a->group != !b->group || (a->group && strcmp(a->group, b->group) != 0) ||
	    (a->group && (a->group_interval != b->group_interval ||
			  a->group_pause_limit_ms != b->group_pause_limit_ms)))
		abort();
	for (size_t i = 0; i < a->ndisks; i++)
		if (strcmp(a->disks[i].name, b->disks[i].name) != 0 ||
		    strcmp(a->disks[i].path, b->disks[i].path) != 0)
			abort();
}

static int semicolon_first(const struct agentconf *c)
{
	if (c->cache[0] == ';' || c->state[0] == ';')
		return 1;
	for (size_t i = 0; i < c->ndisks; i++)
		if (c->disks[i].path[0] == ';')
			return 1;
	return 0;
}

static int load_bytes(const void *data, size_t size, struct agentconf *ret)
{
	_cleanup_close_ int fd = memfd_create("fuzz-agent-config", MFD_CLOEXEC);
	if (fd < 0 || (size && ferry_pwrite_all(fd, data, size, 0) < 0))
		return -EIO;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return agentconf_load(path, ret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Refusals are logged; thousands a second would drown the fuzzer. */
	log_set_max_level(-1);
	_cleanup_(agentconf_free) struct agentconf c = { 0 };
	if (load_bytes(data, size, &c) < 0)
		return 0;
	check(&c);

	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = agentconf_format(&c, "/etc/ferry/fuzz.conf", "written by the fuzzer", &text, &len);
	if (r == -ENAMETOOLONG || r == -ENOMEM || (r == -EINVAL && semicolon_first(&c)))
		return 0;
	if (r < 0)
		abort();
	_cleanup_(agentconf_free) struct agentconf again = { 0 };
	if (load_bytes(text, len, &again) < 0)
		abort();
	check_same(&c, &again);
	return 0;
}
