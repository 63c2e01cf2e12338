/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unpacking a segment's compressed data (DATAZ records, segment format
 * 2.0) ahead of applying it: every frame is decompressed, and every piece
 * that is one whole aligned chunk hashed, on several threads at once, so
 * that the in-order apply only places chunks. The frames themselves go into
 * the store as they are (ferry_ingest_write_chunk).
 */
#pragma once

#include <stdint.h>

#include "ferry/changelog.h"
#include "ferry/crypto.h"

struct unpacked {
	const uint8_t *data; /* the record's plain bytes (rec.length of them) */
	struct ferry_id id;  /* SHA-256 of data, if whole_chunk */
	int whole_chunk;     /* one chunk, aligned: id is set */
	int error;           /* -EBADMSG: the frame did not unpack; data unset */
};

struct unpack;

/* Unpacks every DATAZ record of seg on up to `workers` threads. -ENOMEM is
 * the only failure; a frame that does not unpack is reported per record. */
int unpack_segment(const struct ferry_segment *seg, uint32_t chunk_size, unsigned workers,
		   struct unpack **ret);
/* What record i unpacked to; NULL unless it is a DATAZ record. */
const struct unpacked *unpack_get(const struct unpack *u, uint32_t i);
struct unpack *unpack_free(struct unpack *u);
