/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The contract of pack.c, the pack file format's codec, shared by store.c,
 * the unit tests and the fuzz target: fixed sizes and offsets
 * (docs/format/pack.md), encoders, and parsers that validate bytes from
 * disk or network without trusting any of them. Every function here is
 * pure: no I/O, no allocation beyond what it says. Everything else (image.c,
 * the programs) reads and writes packs through store.h only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "ferry/crypto.h"
#include "ferry/store.h"

#define PACK_MAGIC "FERRYPK\0"
#define PACK_FOOTER_MAGIC "FERRYEND"
#define PACK_VERSION_MAJOR 1
#define PACK_VERSION_MINOR 0

#define PACK_HEADER_SIZE 32u
#define PACK_ENTRY_HEADER_SIZE 56u
#define PACK_INDEX_RECORD_SIZE 56u
#define PACK_FOOTER_SIZE 64u

/* Entry flags. */
#define PACK_FLAG_ZSTD 0x01u
#define PACK_FLAGS_KNOWN PACK_FLAG_ZSTD

/* What the footer says, after its bounds have been checked against the size. */
struct pack_footer {
	uint64_t index_offset;
	uint32_t count;
	uint64_t pack_id;
	struct ferry_id sum; /* SHA-256 over header and index */
};

/* One index record, decoded. */
struct pack_record {
	struct ferry_id id;
	struct ferry_loc loc;
	uint8_t flags;
};

void pack_header_encode(uint8_t out[PACK_HEADER_SIZE], uint64_t pack_id);
void pack_entry_header_encode(uint8_t out[PACK_ENTRY_HEADER_SIZE], uint8_t type, uint8_t flags,
			      uint32_t plen, uint32_t clen, const struct ferry_id *id);
/* Fills in the checksum of an entry whose header and payload are in place. */
void pack_entry_seal(uint8_t *entry);
void pack_index_record_encode(uint8_t out[PACK_INDEX_RECORD_SIZE], const struct ferry_id *id,
			      const struct ferry_loc *loc, uint8_t flags);
void pack_footer_encode(uint8_t out[PACK_FOOTER_SIZE], const struct pack_footer *f);
/* SHA-256 over the header and count index records: the footer's sum. */
int pack_index_sum(const uint8_t *header, const uint8_t *records, uint32_t count,
		   struct ferry_id *ret);
/*
 * Writes the index (recs[0..count), in entry order) and the footer of the
 * pack whose header is at header and whose entries end at index_offset:
 * count * PACK_INDEX_RECORD_SIZE + PACK_FOOTER_SIZE bytes at out.
 */
int pack_trailer_encode(uint8_t *out, const uint8_t *header, uint64_t pack_id,
			uint64_t index_offset, const struct pack_record *recs, uint32_t count);

/* Whether type is an object type this version knows (enum ferry_obj_type). */
int pack_type_valid(uint8_t type);
/* Whether loc (from the catalog or an index, i.e. from disk) can describe an
 * entry at all: known type, plen <= FERRY_OBJ_MAX, clen <= plen, and past
 * the header. */
int pack_loc_valid(const struct ferry_loc *loc);

/* Checks magic and major version; -EBADMSG otherwise. */
int pack_header_parse(const uint8_t *p, uint64_t *ret_pack_id);
/* Checks magic and that header, entries, index and footer tile size exactly. */
int pack_footer_parse(const uint8_t *p, uint64_t size, struct pack_footer *ret);
/*
 * Verifies the footer's SHA-256 over header and index, that the header's
 * pack id matches the footer's, and that the records describe entries that
 * tile the data region exactly. Records are f->count * PACK_INDEX_RECORD_SIZE
 * bytes.
 */
int pack_index_verify(const uint8_t *header, const uint8_t *records, const struct pack_footer *f);
/* Decodes record i of an index that pack_index_verify accepted. */
void pack_index_record(const uint8_t *records, uint32_t i, uint64_t pack_id,
		       struct pack_record *ret);

/*
 * Verifies one entry (header and payload, PACK_ENTRY_HEADER_SIZE + loc->clen
 * bytes at entry) against loc, its checksum, and (when flags >= 0) the
 * index's flags; decompresses it into out (outsize >= loc->plen) and checks
 * SHA-256 of the plain bytes against id. -EBADMSG on any mismatch.
 */
int pack_entry_decode(const uint8_t *entry, const struct ferry_loc *loc, int flags,
		      const struct ferry_id *id, void *out, size_t outsize, ZSTD_DCtx *dctx);

/*
 * Validates a whole pack image in memory: header, footer, index checksum,
 * bounds, and with verify_data every entry (checksum, decompression, id).
 * Only once all of it checks out is cb called for each object in pack
 * order, so a damaged pack never yields a partial result. A negative return
 * from cb stops the walk and is returned.
 */
int pack_parse(const void *buf, size_t len, int verify_data,
	       int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *ud),
	       void *ud);
/* As pack_parse, for a pack whose id the reader knows (from its name):
 * -EBADMSG unless the pack carries that id. */
int pack_parse_named(const void *buf, size_t len, uint64_t pack_id, int verify_data,
		     int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *ud),
		     void *ud);
