/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection for tests, as SQLite's test VFS does it: a plan of
 * faults (an error, a short write, a crash) that the core's I/O paths
 * consult before each operation. Built only with `meson -Dfault_injection=
 * true`; otherwise every call below is an inline no-op and a plan cannot be
 * set. The programs read a plan from FERRY_FAULTS (the core reads no
 * environment); the grammar is in docs/reliability.md:
 *
 *   RULE[,RULE...]    RULE = SITE[~MATCH]:KIND[@N[+]]
 *
 * SITE is write, fsync, commit, put, get, delete, list, freeze or any;
 * MATCH a substring of the blob name (put, get, delete, list) or of the
 * guest agent socket (freeze); KIND eio, enospc,
 * short (write: half the bytes reach the file, then ENOSPC), crash (the
 * process dies with SIGKILL before the operation) or crash-after (after
 * it); N the matching call that fires (1 by default), N+ that one and
 * every later one.
 */
#pragma once

#include <errno.h>
#include <stddef.h>

enum ferry_fault_site {
	FERRY_FAULT_WRITE,  /* ferry_pwrite_all: pack, segment and state files */
	FERRY_FAULT_FSYNC,  /* fsync of files and directories the core writes */
	FERRY_FAULT_COMMIT, /* ferry_catalog_commit */
	FERRY_FAULT_PUT,    /* ferry_blobs_put (any backend) */
	FERRY_FAULT_GET,    /* ferry_blobs_get / _get_range / _size */
	FERRY_FAULT_DELETE, /* ferry_blobs_delete */
	FERRY_FAULT_LIST,   /* ferry_blobs_list */
	FERRY_FAULT_FREEZE, /* freeze_begin: the guest freeze of an app-consistent cut */
	FERRY_FAULT_SITES
};

/* What ferry_fault_before asks of a write: write half, then fail. */
#define FERRY_FAULT_SHORT 1

#ifdef FERRY_FAULT_INJECTION

/* Replaces the plan (NULL or "" clears it). -EINVAL for a spec that does
 * not parse; the old plan is then kept. Not for use while other threads
 * run operations. */
int ferry_fault_plan(const char *spec);
/* Whether this build can inject faults at all. */
static inline int ferry_fault_supported(void)
{
	return 1;
}
/* Before an operation at site on name (NULL where there is none): 0 to go
 * on, -EIO or -ENOSPC to fail it without doing it, FERRY_FAULT_SHORT (write
 * only). Kills the process for a crash rule. Thread-safe. */
int ferry_fault_before(enum ferry_fault_site site, const char *name);
/* After the operation succeeded: kills the process if the call that
 * ferry_fault_before counted for it matched a crash-after rule. */
void ferry_fault_after(enum ferry_fault_site site);

#else

static inline int ferry_fault_plan(const char *spec)
{
	return spec && *spec ? -EOPNOTSUPP : 0;
}
static inline int ferry_fault_supported(void)
{
	return 0;
}
static inline int ferry_fault_before(enum ferry_fault_site site, const char *name)
{
	(void)site;
	(void)name;
	return 0;
}
static inline void ferry_fault_after(enum ferry_fault_site site)
{
	(void)site;
}

#endif
