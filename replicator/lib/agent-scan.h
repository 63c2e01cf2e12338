/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `scan` change tracker of ferry-agent: reads every disk of a VM,
 * compares per-4 KiB-block fingerprints with those of the last cycle, and
 * ships what differs as change-log segments into the cache, ending each
 * cycle with a crash-consistent marker. Its state directory (fingerprint
 * files and a progress file, docs/format/agent-state.md) lets an interrupted
 * cycle resume where it stopped. Internal to ferry-agent.
 */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct ferry_cache;
struct ferry_id;

struct agent_disk {
	char *name;
	char *path;
};

struct agent_scan_params {
	const char *vm;
	const char *state_dir;
	const struct agent_disk *disks;
	size_t ndisks;
	struct ferry_cache *cache;
	/* Set asynchronously (signal handler) to ask for a clean stop: the
	 * scan ships what it has, records its progress and returns 0. */
	const volatile sig_atomic_t *stop;
	/* Called now and then with the bytes of the cycle covered so far
	 * (including what an earlier, interrupted run covered) and the total
	 * bytes of all disks; may be NULL. */
	void (*progress)(void *userdata, uint64_t done, uint64_t total);
	void *userdata;
	/* Threads that compress each segment (0 or 1: the scanning thread). */
	unsigned compress_workers;
	/* The vault's chunk size: data is compressed per chunk so that the
	 * vault stores it as it comes (segment format 2.0); 0 compresses whole
	 * segments (format 1.0). */
	uint32_t chunk_size;
};

struct agent_scan_stats {
	uint64_t cycle;               /* number of the cycle (1, 2, ...) */
	uint64_t seq;                 /* last segment seq written (the marker's) */
	uint64_t scanned_bytes;       /* disk bytes read by this run */
	uint64_t shipped_bytes;       /* DATA record bytes shipped by this run */
	uint64_t zeroed_bytes;        /* bytes covered by ZERO records of this run */
	uint64_t segments;            /* segments put by this run */
	uint64_t cycle_shipped_bytes; /* DATA bytes of the whole cycle, across resumes */
	uint64_t cycle_segments;      /* segments of the whole cycle, across resumes */
	uint64_t total_shipped_bytes; /* cumulative over every cycle of this state dir */
	uint64_t disk_bytes;          /* sum of disk sizes */
	uint64_t resumed_from;        /* cycle bytes already covered when this run began */
	int64_t marker_time_ns;       /* time of the consistency marker */
	int64_t started_ns, finished_ns;
	/* Bytes written at the source and not shipped yet, at the end of the
	 * cycle: the qemu tracker counts its recording dirty bitmaps
	 * (UINT64_MAX when it could not ask qemu); the scan tracker cannot
	 * know before it reads, and leaves 0. */
	uint64_t source_waiting_bytes;
	/* A consistency group's cut (agent-qemu.h): the round this cycle cut
	 * with the group (0: none), how long the VM was paused for it, and
	 * why a due round was skipped ("" when none was). */
	uint64_t group_round;
	int64_t group_pause_ns;
	char group_skipped[256];
	/* App-consistent cuts (the qemu tracker with a guest agent): the errno
	 * of the last attempt (0: it succeeded, or none yet), when it was and
	 * when the last one succeeded (UTC ns; 0: never), and why the last
	 * attempt failed ("" when it did not). They carry over cycles that
	 * make no attempt; the scan tracker leaves them 0. */
	int app_error;
	int64_t app_attempt_ns;
	int64_t app_ok_ns;
	char app_message[256];
};

/*
 * Runs one cycle (or finishes the one in progress). Returns 1 when the
 * cycle is complete and its marker durably in the cache, 0 when *stop
 * interrupted it (progress saved; the next call resumes), -errno on error
 * (already logged, naming the VM and disk).
 */
int agent_scan_cycle(const struct agent_scan_params *p, struct agent_scan_stats *ret);

/*
 * Where the state directory's chain stands: the last segment its progress
 * file records as in the cache (0 before the first). -ENOENT without a
 * progress file (a new or lost state directory).
 */
int agent_scan_head(const struct agent_scan_params *p, uint64_t *ret);
/*
 * A resync: the caller has installed the vault's fingerprints as the
 * committed <disk>.fp files; the progress file now says idle, next segment
 * next_seq after prev, so the next cycle ships what differs from them and
 * chains it where the vault expects. Keeps cycle numbers and totals.
 */
int agent_scan_rebase(const struct agent_scan_params *p, uint64_t next_seq,
		      const struct ferry_id *prev);

/*
 * Fingerprint files (FERRY-FP, docs/format/agent-state.md), for who makes
 * or checks one outside a cycle (a resync's fingerprints of a vault image).
 * agent_fp_create writes the header of an incomplete file for a disk of
 * size bytes at fd and sizes the file (every entry zero, sparse);
 * agent_fp_seal computes the body checksum and marks it complete (no sync);
 * agent_fp_check verifies a complete one (-EBADMSG, -EPROTONOSUPPORT) and
 * gives the disk size it describes. agent_fp_entry is the entry of one
 * 4 KiB block: all zero for a zero block.
 */
int agent_fp_create(int fd, uint64_t size);
int agent_fp_seal(int fd);
int agent_fp_check(int fd, uint64_t *ret_size);
void agent_fp_entry(const void *block, uint8_t entry[16]);
