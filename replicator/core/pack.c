/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pack file format's codec (docs/format/pack.md): encoders for the
 * writer, and parsers that validate bytes from disk or network without
 * trusting any of them, for the store's reads, the unit tests and the fuzz
 * target. Pure: no I/O, no state, nothing allocated beyond what a function
 * says; where a pack lives and how it is read is store.c's business.
 */
#include "pack-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ferry/util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(ZSTD_DCtx *, ZSTD_freeDCtx)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_sha256_ctx *, ferry_sha256_free)

void pack_header_encode(uint8_t out[PACK_HEADER_SIZE], uint64_t pack_id)
{
	memset(out, 0, PACK_HEADER_SIZE);
	memcpy(out, PACK_MAGIC, 8);
	put_le16(out + 8, PACK_VERSION_MAJOR);
	put_le16(out + 10, PACK_VERSION_MINOR);
	put_le64(out + 16, pack_id);
}

int pack_header_parse(const uint8_t *p, uint64_t *ret_pack_id)
{
	if (memcmp(p, PACK_MAGIC, 8) != 0)
		return -EBADMSG;
	/* Minor versions only give meaning to fields we ignore; a new major
	 * version changes what the bytes mean, so we refuse it. */
	if (get_le16(p + 8) != PACK_VERSION_MAJOR)
		return -EBADMSG;
	*ret_pack_id = get_le64(p + 16);
	return 0;
}

void pack_entry_header_encode(uint8_t out[PACK_ENTRY_HEADER_SIZE], uint8_t type, uint8_t flags,
			      uint32_t plen, uint32_t clen, const struct ferry_id *id)
{
	memset(out, 0, PACK_ENTRY_HEADER_SIZE);
	out[8] = type;
	out[9] = flags;
	put_le32(out + 12, plen);
	put_le32(out + 16, clen);
	memcpy(out + 24, id->b, FERRY_ID_SIZE);
}

/* The checksum leads the entry so that what it covers is contiguous. */
static uint64_t entry_checksum(const uint8_t *entry, uint32_t clen)
{
	return XXH3_64bits(entry + 8, PACK_ENTRY_HEADER_SIZE - 8 + (size_t)clen);
}

void pack_entry_seal(uint8_t *entry)
{
	put_le64(entry, entry_checksum(entry, get_le32(entry + 16)));
}

void pack_index_record_encode(uint8_t out[PACK_INDEX_RECORD_SIZE], const struct ferry_id *id,
			      const struct ferry_loc *loc, uint8_t flags)
{
	memset(out, 0, PACK_INDEX_RECORD_SIZE);
	memcpy(out, id->b, FERRY_ID_SIZE);
	put_le64(out + 32, loc->offset);
	put_le32(out + 40, loc->clen);
	put_le32(out + 44, loc->plen);
	out[48] = loc->type;
	out[49] = flags;
}

void pack_index_record(const uint8_t *records, uint32_t i, uint64_t pack_id,
		       struct pack_record *ret)
{
	const uint8_t *p = records + (size_t)i * PACK_INDEX_RECORD_SIZE;
	memcpy(ret->id.b, p, FERRY_ID_SIZE);
	ret->loc = (struct ferry_loc){
		.pack = pack_id,
		.offset = get_le64(p + 32),
		.clen = get_le32(p + 40),
		.plen = get_le32(p + 44),
		.type = p[48],
	};
	ret->flags = p[49];
}

void pack_footer_encode(uint8_t out[PACK_FOOTER_SIZE], const struct pack_footer *f)
{
	memset(out, 0, PACK_FOOTER_SIZE);
	put_le64(out, f->index_offset);
	put_le32(out + 8, f->count);
	memcpy(out + 16, f->sum.b, FERRY_ID_SIZE);
	put_le64(out + 48, f->pack_id);
	memcpy(out + 56, PACK_FOOTER_MAGIC, 8);
}

int pack_index_sum(const uint8_t *header, const uint8_t *records, uint32_t count,
		   struct ferry_id *ret)
{
	_cleanup_(ferry_sha256_freep) struct ferry_sha256_ctx *c = NULL;
	int r = ferry_sha256_new(&c);
	if (r < 0)
		return r;
	ferry_sha256_update(c, header, PACK_HEADER_SIZE);
	ferry_sha256_update(c, records, (size_t)count * PACK_INDEX_RECORD_SIZE);
	ferry_sha256_final(c, ret);
	return 0;
}

int pack_trailer_encode(uint8_t *out, const uint8_t *header, uint64_t pack_id,
			uint64_t index_offset, const struct pack_record *recs, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++)
		pack_index_record_encode(out + (size_t)i * PACK_INDEX_RECORD_SIZE, &recs[i].id,
					 &recs[i].loc, recs[i].flags);
	struct pack_footer f = { .index_offset = index_offset, .count = count, .pack_id = pack_id };
	int r = pack_index_sum(header, out, count, &f.sum);
	if (r < 0)
		return r;
	pack_footer_encode(out + (size_t)count * PACK_INDEX_RECORD_SIZE, &f);
	return 0;
}

int pack_footer_parse(const uint8_t *p, uint64_t size, struct pack_footer *ret)
{
	if (size < PACK_HEADER_SIZE + PACK_FOOTER_SIZE)
		return -EBADMSG;
	if (memcmp(p + 56, PACK_FOOTER_MAGIC, 8) != 0)
		return -EBADMSG;
	struct pack_footer f = {
		.index_offset = get_le64(p),
		.count = get_le32(p + 8),
		.pack_id = get_le64(p + 48),
	};
	memcpy(f.sum.b, p + 16, FERRY_ID_SIZE);
	/* count is 32 bits, so this product cannot overflow 64. */
	uint64_t index_len = (uint64_t)f.count * PACK_INDEX_RECORD_SIZE;
	if (f.index_offset < PACK_HEADER_SIZE || f.index_offset > size - PACK_FOOTER_SIZE ||
	    index_len != size - PACK_FOOTER_SIZE - f.index_offset)
		return -EBADMSG;
	*ret = f;
	return 0;
}

int pack_type_valid(uint8_t type)
{
	return type >= FERRY_OBJ_CHUNK && type <= FERRY_OBJ_VAULT;
}

/* Sizes an entry may legally have: raw when compression did not help, so
 * clen never exceeds plen, which bounds every buffer a reader allocates. */
static int entry_sizes_valid(uint8_t flags, uint32_t plen, uint32_t clen)
{
	if ((flags & ~PACK_FLAGS_KNOWN) || plen > FERRY_OBJ_MAX || clen > plen)
		return 0;
	if (!(flags & PACK_FLAG_ZSTD) && clen != plen)
		return 0;
	return 1;
}

int pack_loc_valid(const struct ferry_loc *loc)
{
	return pack_type_valid(loc->type) && loc->plen <= FERRY_OBJ_MAX && loc->clen <= loc->plen &&
	       loc->offset >= PACK_HEADER_SIZE;
}

int pack_index_verify(const uint8_t *header, const uint8_t *records, const struct pack_footer *f)
{
	struct ferry_id sum;
	int r = pack_index_sum(header, records, f->count, &sum);
	if (r < 0)
		return r;
	if (!ferry_id_equal(&sum, &f->sum))
		return -EBADMSG;

	uint64_t pack_id;
	r = pack_header_parse(header, &pack_id);
	if (r < 0)
		return r;
	if (pack_id != f->pack_id)
		return -EBADMSG;

	/* Entries must tile [header, index) exactly: no gaps a reader could be
	 * pointed into, no overlaps. */
	uint64_t expect = PACK_HEADER_SIZE;
	for (uint32_t i = 0; i < f->count; i++) {
		struct pack_record rec;
		pack_index_record(records, i, f->pack_id, &rec);
		if (rec.loc.offset != expect || !pack_type_valid(rec.loc.type) ||
		    !entry_sizes_valid(rec.flags, rec.loc.plen, rec.loc.clen))
			return -EBADMSG;
		expect += PACK_ENTRY_HEADER_SIZE + (uint64_t)rec.loc.clen;
		if (expect > f->index_offset)
			return -EBADMSG;
	}
	return expect == f->index_offset ? 0 : -EBADMSG;
}

int pack_entry_decode(const uint8_t *entry, const struct ferry_loc *loc, int flags,
		      const struct ferry_id *id, void *out, size_t outsize, ZSTD_DCtx *dctx)
{
	if (outsize < loc->plen)
		return -ENOBUFS;
	uint8_t eflags = entry[9];
	uint32_t plen = get_le32(entry + 12), clen = get_le32(entry + 16);
	if (entry[8] != loc->type || plen != loc->plen || clen != loc->clen ||
	    (flags >= 0 && eflags != (uint8_t)flags) || !entry_sizes_valid(eflags, plen, clen) ||
	    memcmp(entry + 24, id->b, FERRY_ID_SIZE) != 0)
		return -EBADMSG;
	if (get_le64(entry) != entry_checksum(entry, clen))
		return -EBADMSG;

	const uint8_t *payload = entry + PACK_ENTRY_HEADER_SIZE;
	if (eflags & PACK_FLAG_ZSTD) {
		size_t n = ZSTD_decompressDCtx(dctx, out, plen, payload, clen);
		if (ZSTD_isError(n) || n != plen)
			return -EBADMSG;
	} else
		memcpy(out, payload, plen);

	struct ferry_id got;
	ferry_sha256(out, plen, &got);
	return ferry_id_equal(&got, id) ? 0 : -EBADMSG;
}

static int parse_image(const uint8_t *p, size_t len, int verify_data, const uint64_t *expect_id,
		       int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *ud),
		       void *ud)
{
	if (!p || len < PACK_HEADER_SIZE + PACK_FOOTER_SIZE)
		return -EBADMSG;
	struct pack_footer f;
	int r = pack_footer_parse(p + len - PACK_FOOTER_SIZE, len, &f);
	if (r < 0)
		return r;
	const uint8_t *records = p + f.index_offset;
	r = pack_index_verify(p, records, &f);
	if (r < 0)
		return r;
	if (expect_id && f.pack_id != *expect_id)
		return -EBADMSG;

	if (verify_data && f.count > 0) {
		uint32_t maxp = 1;
		for (uint32_t i = 0; i < f.count; i++) {
			struct pack_record rec;
			pack_index_record(records, i, f.pack_id, &rec);
			maxp = MAX(maxp, rec.loc.plen);
		}
		_cleanup_(ZSTD_freeDCtxp) ZSTD_DCtx *dctx = ZSTD_createDCtx();
		_cleanup_free_ uint8_t *out = malloc(maxp);
		if (!dctx || !out)
			return -ENOMEM;
		for (uint32_t i = 0; i < f.count; i++) {
			struct pack_record rec;
			pack_index_record(records, i, f.pack_id, &rec);
			r = pack_entry_decode(p + rec.loc.offset, &rec.loc, rec.flags, &rec.id, out,
					      maxp, dctx);
			if (r < 0)
				return r;
		}
	}

	/* Only now, with everything checked, does the caller see anything. */
	for (uint32_t i = 0; cb && i < f.count; i++) {
		struct pack_record rec;
		pack_index_record(records, i, f.pack_id, &rec);
		r = cb(&rec.id, &rec.loc, ud);
		if (r < 0)
			return r;
	}
	return 0;
}

int pack_parse(const void *buf, size_t len, int verify_data,
	       int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *ud),
	       void *ud)
{
	return parse_image(buf, len, verify_data, NULL, cb, ud);
}

int pack_parse_named(const void *buf, size_t len, uint64_t pack_id, int verify_data,
		     int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *ud),
		     void *ud)
{
	return parse_image(buf, len, verify_data, &pack_id, cb, ud);
}
