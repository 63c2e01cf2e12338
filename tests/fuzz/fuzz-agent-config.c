/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for ferry-agent's configuration parser (config_load in
 * replicator/agent.c: inih fed line by line by config_read_line). The
 * parser is static in the program's only source file, next to main(), so
 * this target compiles that file in with its main() renamed rather than
 * moving the parser out of it. The input becomes the configuration file
 * (a memfd, opened by path as the agent does). A file that loads must
 * describe a usable agent: every required key, 1..256 disks with valid,
 * distinct names and a path each, an interval within bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int agent_main(int argc, char **argv);

#define main agent_main
#include "../../replicator/agent.c"
#undef main

static void check(const struct config *c)
{
	if (!c->vm || !ferry_name_valid(c->vm) || !c->cache || !*c->cache || !c->state ||
	    !*c->state || c->interval > MAX_INTERVAL || c->ndisks == 0 || c->ndisks > MAX_DISKS)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Refusals are logged; thousands a second would drown the fuzzer. */
	log_set_max_level(-1);
	_cleanup_close_ int fd = memfd_create("fuzz-agent-config", MFD_CLOEXEC);
	if (fd < 0 || (size && ferry_pwrite_all(fd, data, size, 0) < 0))
		return 0;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	_cleanup_(config_free) struct config c = { 0 };
	if (config_load(path, &c) >= 0)
		check(&c);
	return 0;
}
