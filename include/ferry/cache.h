/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache: segments in flight between agent and replicator, and the
 * acknowledgements that travel back, on a blobs location. The agent only
 * ever makes outbound calls: it puts segments and its status, and reads
 * acks; the replicator reads and deletes segments and puts acks; `ferry
 * status` reads the agent's status, the only way the target hears how the
 * source is doing.
 *
 * Names: segments/<vm>/<seq, 16 hex digits>.seg (created exclusively,
 * immutable), acks/<vm>.ack and status/<vm>.status (both replaced whole).
 * Format: docs/format/cache.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"
#include "ferry/util.h"

struct ferry_cache;

struct ferry_ack {
	uint64_t seq;           /* last applied segment; 0 = none */
	struct ferry_id digest; /* its digest */
};

/* Trackers, as the agent's status names them. */
enum ferry_tracker {
	FERRY_TRACKER_SCAN = 1,
	FERRY_TRACKER_QEMU = 2,
	FERRY_TRACKER_LIBVIRT = 3,
};

/* A figure the agent does not know (the scan tracker cannot tell what
 * waits at the source before it reads it). */
#define FERRY_STATUS_UNKNOWN UINT64_MAX
/* The longest message a status carries (bytes, without the NUL). */
#define FERRY_STATUS_MESSAGE_MAX 1024

/*
 * What the agent reports after every cycle. Times are the agent's clock
 * (UTC ns since the epoch), as marker times are. The cycle fields describe
 * the last completed cycle and are all zero before the first one.
 */
struct ferry_agent_status {
	uint8_t tracker;     /* enum ferry_tracker; another nonzero value is a
			      * tracker newer than this reader */
	uint32_t interval_s; /* the agent's time between cycle starts */
	int64_t written_ns;  /* when the agent wrote this status */
	int error;           /* errno of the last cycle when it failed, else 0 */
	/* With an error: what the agent said about it (its error message, a
	 * disk that changed size, a clock outside the marker times), or ""
	 * when it said nothing; always "" without an error. No NUL inside;
	 * may hold anything else, so escape it before printing (log_escape). */
	char message[FERRY_STATUS_MESSAGE_MAX + 1];
	uint64_t cycle;     /* number of the last completed cycle, as the
			      * tracker counts; 0 = none */
	uint64_t seq;       /* the segment holding its marker */
	int64_t marker_ns;  /* that marker's time */
	int64_t started_ns; /* when the cycle started */
	int64_t duration_ns;
	uint64_t shipped_bytes; /* DATA bytes it shipped, before compression */
	uint64_t segments;      /* segments it put */
	uint64_t read_bytes;    /* disk bytes it read */
	/* Bytes written at the source and not yet shipped, at the end of the
	 * cycle (the qemu tracker: what its dirty bitmaps count);
	 * FERRY_STATUS_UNKNOWN when the tracker cannot tell. */
	uint64_t source_waiting_bytes;
	/* (1.2) The agent's app-consistent points: the errno of its last
	 * attempt (0: it succeeded, or none yet), when that attempt was and
	 * when the last one succeeded (0: never); with app_error, what the
	 * agent said about it (a guest agent that did not answer, a freeze
	 * that timed out), under the message's rules. The values carry over
	 * cycles that make no attempt. */
	int app_error;
	int64_t app_attempt_ns;
	int64_t app_ok_ns;
	char app_message[FERRY_STATUS_MESSAGE_MAX + 1];
	/* (1.2) The cycle in progress while it reads whole disks (the scan
	 * tracker always does): bytes covered so far, including what an
	 * interrupted run covered before, of progress_total_bytes, and the
	 * agent's read rate over this run, bytes per second (0: unknown).
	 * 0/0/0 between cycles, and for a tracker that reads only what
	 * changed. */
	uint64_t progress_done_bytes, progress_total_bytes;
	uint64_t progress_rate;
};

int ferry_cache_open(const char *url, int create, struct ferry_cache **ret);
struct ferry_cache *ferry_cache_free(struct ferry_cache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_cache *, ferry_cache_free)
const char *ferry_cache_url(const struct ferry_cache *c);
/* For a cache in a local directory, that directory (absolute); NULL for
 * object storage. The replicator watches it for segments as they arrive. */
const char *ferry_cache_local_dir(const struct ferry_cache *c);

/* -EEXIST if a segment with that seq is already there. */
int ferry_cache_put_segment(struct ferry_cache *c, const char *vm, uint64_t seq, const void *buf,
			    size_t len);
/* -EFBIG, before anything is allocated for it, for a blob larger than
 * FERRY_SEGMENT_MAX_SIZE: no segment is, so it is junk or damage. */
int ferry_cache_get_segment(struct ferry_cache *c, const char *vm, uint64_t seq, void **ret_buf,
			    size_t *ret_len);
int ferry_cache_delete_segment(struct ferry_cache *c, const char *vm, uint64_t seq);
/* Segments waiting for vm, ascending seq; *ret_bytes sums their sizes.
 * Names that are not well-formed segment names are ignored. The caller
 * frees *ret_seqs. */
int ferry_cache_list_segments(struct ferry_cache *c, const char *vm, uint64_t **ret_seqs,
			      size_t *ret_n, uint64_t *ret_bytes);
int ferry_cache_put_ack(struct ferry_cache *c, const char *vm, const struct ferry_ack *ack);
/* A missing ack is seq 0 (nothing applied yet), not an error;
 * -EBADMSG if the ack is damaged. */
int ferry_cache_get_ack(struct ferry_cache *c, const char *vm, struct ferry_ack *ret);

/* Where an agent's segment chain stands in the cache: the acknowledgement
 * and, when a segment newer than it waits there, that newest segment. */
struct ferry_chain_head {
	struct ferry_ack ack;
	uint64_t top_seq; /* 0: nothing waits beyond the ack */
	struct ferry_id top_digest;
	int top_marker;        /* the newest segment holds a marker */
	int64_t top_marker_ns; /* its time */
};
/* Reads the ack, lists the segments and parses the newest one beyond the
 * ack, unless its seq is below from (a segment the caller knows already:
 * top_seq is then 0). -EBADMSG when that segment (or the ack) is damaged,
 * or names another VM or sequence number. */
int ferry_cache_chain_head(struct ferry_cache *c, const char *vm, uint64_t from,
			   struct ferry_chain_head *ret);

/* Replaces the VM's status whole. -EINVAL for a status that breaks the
 * format's rules (no tracker, cycle 0 with figures, a message without an
 * error, progress done beyond its total). */
int ferry_cache_put_status(struct ferry_cache *c, const char *vm,
			   const struct ferry_agent_status *st);
/* -ENOENT when the agent never reported (an older agent, or none yet);
 * -EBADMSG if the status is damaged or names another VM;
 * -EPROTONOSUPPORT for a major version this reader does not know. */
int ferry_cache_get_status(struct ferry_cache *c, const char *vm, struct ferry_agent_status *ret);
