/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the segment parser. Any input must either be refused
 * cleanly or parse into records that are all readable; a parsed segment
 * must also be writable again by the writer (the writer accepts whatever
 * the parser accepts) and parse back to the same records. Every parsed
 * segment keeps the format's bounds: at most FERRY_SEGMENT_MAX_SIZE bytes,
 * disks of at most FERRY_DISK_SIZE_MAX, marker times within
 * FERRY_MARKER_TIME_MIN_NS..MAX_NS. Each input is tried twice: as it is,
 * and with its trailer recomputed, so that mutations reach the header and
 * record checks behind the digest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment *, ferry_segment_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment_writer *, ferry_segment_writer_free);

/* 1: the record does not unpack (refused), 0: added, -errno: the writer
 * refused what the parser accepted (a bug). */
static int add(struct ferry_segment_writer *w, const struct ferry_record *r)
{
	switch (r->type) {
	case FERRY_REC_DATAZ: {
		_cleanup_free_ uint8_t *plain = malloc(r->length);
		if (!plain || ferry_record_unpack(r, plain) < 0)
			return 1;
		return ferry_segment_writer_add_data(w, r->disk, r->offset, plain, r->length);
	}
	case FERRY_REC_DISK:
		return ferry_segment_writer_add_disk(w, r->disk, r->name, r->length);
	case FERRY_REC_DATA:
		return ferry_segment_writer_add_data(w, r->disk, r->offset, r->data, r->length);
	case FERRY_REC_ZERO:
		return ferry_segment_writer_add_zero(w, r->disk, r->offset, r->length);
	case FERRY_REC_TRIM:
		return ferry_segment_writer_add_trim(w, r->disk, r->offset, r->length);
	case FERRY_REC_MARKER:
		return ferry_segment_writer_add_marker(w, r->consistency, r->time_ns);
	}
	return -EINVAL;
}

static int same(const struct ferry_record *a, const struct ferry_record *b)
{
	if (a->type == FERRY_REC_DATAZ) {
		_cleanup_free_ uint8_t *plain = malloc(a->length);
		return plain && b->type == FERRY_REC_DATA && a->disk == b->disk &&
		       a->offset == b->offset && a->length == b->length &&
		       ferry_record_unpack(a, plain) == 0 && memcmp(plain, b->data, a->length) == 0;
	}
	if (a->type != b->type || a->disk != b->disk || a->offset != b->offset ||
	    a->length != b->length || a->consistency != b->consistency || a->time_ns != b->time_ns)
		return 0;
	if (a->type == FERRY_REC_DISK && strcmp(a->name, b->name) != 0)
		return 0;
	if (a->type == FERRY_REC_DATA && memcmp(a->data, b->data, a->length) != 0)
		return 0;
	return 1;
}

static void one(const uint8_t *data, size_t size)
{
	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	if (ferry_segment_parse(data, size, &s) < 0)
		return;

	const struct ferry_segment_info *info = ferry_segment_info(s);
	if (size > FERRY_SEGMENT_MAX_SIZE)
		abort();
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
	if (ferry_segment_writer_new(info->vm, info->seq, &info->prev, &w) < 0)
		abort();
	struct ferry_record r;
	for (uint32_t i = 0; i < info->nrecords; i++) {
		if (ferry_segment_record(s, i, &r) < 0)
			abort();
		if ((r.type == FERRY_REC_DISK && r.length > FERRY_DISK_SIZE_MAX) ||
		    (r.type == FERRY_REC_MARKER && (r.time_ns < FERRY_MARKER_TIME_MIN_NS ||
						    r.time_ns >= FERRY_MARKER_TIME_MAX_NS)))
			abort();
		int k = add(w, &r);
		if (k > 0)
			return;
		if (k < 0)
			abort();
	}
	if (ferry_segment_record(s, info->nrecords, &r) != -ERANGE)
		abort();

	_cleanup_free_ void *buf = NULL;
	size_t len;
	if (ferry_segment_writer_finish(w, &buf, &len, NULL) < 0)
		abort();
	_cleanup_(ferry_segment_freep) struct ferry_segment *t = NULL;
	if (ferry_segment_parse(buf, len, &t) < 0 ||
	    ferry_segment_info(t)->nrecords != info->nrecords)
		abort();
	for (uint32_t i = 0; i < info->nrecords; i++) {
		struct ferry_record a, b;
		if (ferry_segment_record(s, i, &a) < 0 || ferry_segment_record(t, i, &b) < 0 ||
		    !same(&a, &b))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size);
	if (size < 40)
		return 0;
	_cleanup_free_ uint8_t *fixed = malloc(size);
	if (!fixed)
		return 0;
	memcpy(fixed, data, size - 40);
	struct ferry_id d;
	ferry_sha256(fixed, size - 40, &d);
	memcpy(fixed + size - 40, d.b, 32);
	memcpy(fixed + size - 8, "FERRYEND", 8);
	one(fixed, size);
	return 0;
}
