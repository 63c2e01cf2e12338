/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The readers of the `scan` tracker's state files (agent-scan.c,
 * docs/format/agent-state.md), exposed for their fuzz target: both take
 * bytes that a crash, a full disk or a stray editor may have damaged, and
 * must refuse them cleanly. Internal to agent-scan.c otherwise.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

enum pstate {
	P_IDLE,
	P_SCANNING,
	P_COMMITTING
};

struct progress {
	uint64_t cycle; /* the cycle in progress, or the next one when idle */
	enum pstate state;
	uint64_t next_seq;
	struct ferry_id prev;
	uint64_t disk;
	uint64_t offset;
	uint64_t cycle_shipped, cycle_segments, total_shipped;
	int64_t marker_time_ns;
};

/*
 * Parses a progress file: text holds len bytes and a NUL at text[len], and
 * is modified. -EBADMSG on any damage, -EPROTONOSUPPORT for an unknown major
 * version, -EXDEV when it names another VM than vm, -ECHILD when its disks
 * differ from disks_list ("os,data"). Unknown keys are ignored.
 */
int agent_progress_parse(char *text, size_t len, const char *vm, const char *disks_list,
			 struct progress *ret);

/* Reads and checks the header of the fingerprint file open at fd, against
 * the file's size too: -EBADMSG on damage, -EPROTONOSUPPORT on an unknown
 * major version. ret_sum (the body checksum) may be NULL. */
int agent_fp_header_read(int fd, uint64_t *ret_size, uint32_t *ret_flags, uint8_t ret_sum[16]);
