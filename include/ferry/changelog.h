/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Change-log segments: what the agent ships and the replicator applies.
 * A segment belongs to one VM, has a sequence number and the digest of the
 * segment before it, and holds an ordered list of records (disk
 * declarations, data, zero ranges, trims, consistency markers), zstd
 * compressed and covered by SHA-256. Format: docs/format/segment.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

/* Writers cut segments at well under this much plain payload (the agent at
 * about 16 MiB); records that would push the payload past
 * FERRY_SEGMENT_MAX_PAYLOAD are refused with -E2BIG. */
#define FERRY_SEGMENT_MAX_PLAIN (64u * 1024u * 1024u)
/* The payload bound both sides keep: the data plus room for record headers. */
#define FERRY_SEGMENT_MAX_PAYLOAD (FERRY_SEGMENT_MAX_PLAIN + 1024u * 1024u)
/* The largest header a reader accepts (a later minor version may grow it). */
#define FERRY_SEGMENT_MAX_HEADER 4096u
/* The largest segment file there can be: the largest header, the largest
 * payload (stored raw, or compressed into fewer bytes) and the 40-byte
 * trailer. Readers check a segment's size against this before they
 * allocate for it: anything larger is not a segment. */
#define FERRY_SEGMENT_MAX_SIZE (FERRY_SEGMENT_MAX_HEADER + FERRY_SEGMENT_MAX_PAYLOAD + 40u)
/* A disk a segment may declare: 1 PiB at most. */
#define FERRY_DISK_SIZE_MAX (UINT64_C(1) << 50)
/* The times a MARKER may carry, ns since the epoch: 2000-01-01T00:00:00Z
 * up to (not including) 2200-01-01T00:00:00Z. A clock outside them is
 * wrong; inside them, differences of marker times never overflow and
 * recovery-point ids (the time, YYYYMMDDTHHMMSSZ) sort as strings. */
#define FERRY_MARKER_TIME_MIN_NS (INT64_C(946684800) * 1000000000)
#define FERRY_MARKER_TIME_MAX_NS (INT64_C(7258118400) * 1000000000)
/* The largest group round a MARKER may carry: rounds are stored as the
 * catalog's signed 64-bit integers. */
#define FERRY_GROUP_ROUND_MAX ((uint64_t)INT64_MAX)

enum ferry_rec_type {
	FERRY_REC_DISK = 1,   /* declares disk index -> name, size */
	FERRY_REC_DATA = 2,   /* bytes at offset */
	FERRY_REC_ZERO = 3,   /* range reads as zeros */
	FERRY_REC_TRIM = 4,   /* range discarded (reads as zeros) */
	FERRY_REC_MARKER = 5, /* consistency point covering every disk */
	FERRY_REC_DATAZ = 6,  /* bytes at offset, as one zstd frame (format 2.0) */
};

enum ferry_consistency {
	FERRY_CONSISTENCY_CRASH = 1,
	FERRY_CONSISTENCY_APP = 2,
};

struct ferry_record {
	enum ferry_rec_type type;
	uint16_t disk;                      /* DISK, DATA, ZERO, TRIM */
	uint64_t offset;                    /* DATA, ZERO, TRIM: bytes, 4 KiB aligned */
	uint64_t length;                    /* DATA, ZERO, TRIM: bytes, 4 KiB multiple;
			    DISK: disk size in bytes */
	const void *data;                   /* DATA: length bytes, valid while the segment lives */
	const void *frame;                  /* DATAZ: zstd frame of length bytes, as data */
	size_t frame_len;                   /* DATAZ */
	const char *name;                   /* DISK: disk name */
	enum ferry_consistency consistency; /* MARKER */
	int64_t time_ns;                    /* MARKER: when the cut was made */
	/* MARKER: 0 for a cut of this VM alone; R > 0 when the marker is this
	 * VM's cut of round R of its consistency group (format 3.0), which
	 * every member's marker of the round carries with the same time_ns. */
	uint64_t group_round;
};

/* Identity of one segment, read from its header. */
struct ferry_segment_info {
	char vm[65];
	uint64_t seq;
	struct ferry_id prev;   /* digest of segment seq-1; null for seq 1 */
	struct ferry_id digest; /* this segment's digest (its trailer) */
	int64_t created_ns;
	uint32_t nrecords;
};

struct ferry_segment_writer;

int ferry_segment_writer_new(const char *vm, uint64_t seq, const struct ferry_id *prev,
			     struct ferry_segment_writer **ret);
struct ferry_segment_writer *ferry_segment_writer_free(struct ferry_segment_writer *w);
/* Starts segment seq (after prev) in the same writer: same VM, workers and
 * chunking, no records, and the buffers kept, so that a program writing
 * segment after segment does not allocate and fault in 16 MiB for each.
 * Same rules for seq and prev as ferry_segment_writer_new. */
int ferry_segment_writer_reset(struct ferry_segment_writer *w, uint64_t seq,
			       const struct ferry_id *prev);
/* -EFBIG for a size over FERRY_DISK_SIZE_MAX. */
int ferry_segment_writer_add_disk(struct ferry_segment_writer *w, uint16_t disk, const char *name,
				  uint64_t size);
int ferry_segment_writer_add_data(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  const void *buf, uint64_t len);
int ferry_segment_writer_add_zero(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  uint64_t len);
int ferry_segment_writer_add_trim(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  uint64_t len);
/* -ERANGE for a time outside FERRY_MARKER_TIME_MIN_NS..MAX_NS (the
 * writer's clock is wrong). */
int ferry_segment_writer_add_marker(struct ferry_segment_writer *w,
				    enum ferry_consistency consistency, int64_t time_ns);
/* A marker that is this VM's cut of round (1 to FERRY_GROUP_ROUND_MAX,
 * -EINVAL otherwise) of its consistency group: a segment holding one is
 * written as format 3.0, which replicators older than it refuse as a
 * version they do not know (docs/format/segment.md, "Compatibility").
 * Same rules as add_marker otherwise. */
int ferry_segment_writer_add_group_marker(struct ferry_segment_writer *w,
					  enum ferry_consistency consistency, int64_t time_ns,
					  uint64_t round);
/* Sets prev after the fact (for writers that learn the digest of the
 * segment before only when it is finished, elsewhere); same rule as new. */
int ferry_segment_writer_set_prev(struct ferry_segment_writer *w, const struct ferry_id *prev);
/* Plain bytes of records added so far (to cut segments by size). */
uint64_t ferry_segment_writer_size(const struct ferry_segment_writer *w);
/* Lets finish compress on this many threads (the program's choice; 0 or 1:
 * on the calling thread). The output is the same format either way. */
void ferry_segment_writer_set_workers(struct ferry_segment_writer *w, unsigned workers);
/*
 * Ships data compressed per chunk (format 2.0): every DATA record is cut at
 * multiples of chunk_size (a power of two, 4 KiB to 4 MiB) of the disk
 * offset and each piece compressed on its own, as a DATAZ record where
 * that makes it smaller, so that the target can store the pieces as they
 * are instead of compressing them again. The payload is then not
 * compressed as a whole. Call before finish; -EINVAL for a bad size.
 */
int ferry_segment_writer_set_chunking(struct ferry_segment_writer *w, uint32_t chunk_size);
/* Encodes the segment into a new buffer and gives its info (with digest). */
int ferry_segment_writer_finish(struct ferry_segment_writer *w, void **ret_buf, size_t *ret_len,
				struct ferry_segment_info *ret_info);

struct ferry_segment;

/* Parses and verifies a whole segment (size, checksum, then structure):
 * -EBADMSG with nothing returned on any damage (a len over
 * FERRY_SEGMENT_MAX_SIZE among it), -EPROTONOSUPPORT for an unknown major
 * version. The segment keeps its own copy of the records. */
int ferry_segment_parse(const void *buf, size_t len, struct ferry_segment **ret);
struct ferry_segment *ferry_segment_free(struct ferry_segment *s);
const struct ferry_segment_info *ferry_segment_info(const struct ferry_segment *s);
/* Record i in order; -ERANGE past the last. */
int ferry_segment_record(const struct ferry_segment *s, uint32_t i, struct ferry_record *ret);
/* DATAZ: decompresses the frame into dst (rec->length bytes). The parser
 * checked the frame's header; -EBADMSG if its content is not exactly
 * rec->length bytes after all. Thread-safe. */
int ferry_record_unpack(const struct ferry_record *rec, void *dst);
