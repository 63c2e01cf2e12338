/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the pack parser: any byte string must either parse as a
 * whole valid pack (every object decompressed and checked against its id)
 * or fail cleanly, never crash, hang or read out of bounds. Random bytes
 * rarely get past the checksums, so each input is also tried "resealed":
 * footer and entry checksums recomputed, which lets the fuzzer reach the
 * bounds checks, the tiling rules and zstd behind them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"
#include "pack-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check_obj(const struct ferry_id *id, const struct ferry_loc *loc, void *ud)
{
	size_t size = *(const size_t *)ud;
	if (loc->offset + PACK_ENTRY_HEADER_SIZE + loc->clen > size || loc->clen > loc->plen ||
	    loc->plen > FERRY_OBJ_MAX)
		abort();
	return 0;
}

static void parse_both(const uint8_t *data, size_t size)
{
	int r0 = pack_parse(data, size, 0, check_obj, &size);
	int r1 = pack_parse(data, size, 1, check_obj, &size);
	/* Verifying the data can only find more damage, never less. */
	if (r0 < 0 && r1 >= 0)
		abort();
}

/* Recomputes what a forger would: the footer's SHA-256 and every entry
 * checksum the (untrusted) index points at within bounds. */
static void reseal(uint8_t *p, size_t size)
{
	struct pack_footer f;
	if (size < PACK_HEADER_SIZE + PACK_FOOTER_SIZE ||
	    pack_footer_parse(p + size - PACK_FOOTER_SIZE, size, &f) < 0)
		return;
	const uint8_t *records = p + f.index_offset;
	for (uint32_t i = 0; i < f.count; i++) {
		struct pack_record rec;
		pack_index_record(records, i, f.pack_id, &rec);
		if (rec.loc.offset > f.index_offset ||
		    f.index_offset - rec.loc.offset < PACK_ENTRY_HEADER_SIZE)
			continue;
		uint8_t *e = p + rec.loc.offset;
		if (get_le32(e + 16) > f.index_offset - rec.loc.offset - PACK_ENTRY_HEADER_SIZE)
			continue;
		pack_entry_seal(e);
	}
	uint8_t *buf = malloc(PACK_HEADER_SIZE + (size_t)f.count * PACK_INDEX_RECORD_SIZE);
	if (!buf)
		return;
	memcpy(buf, p, PACK_HEADER_SIZE);
	memcpy(buf + PACK_HEADER_SIZE, records, (size_t)f.count * PACK_INDEX_RECORD_SIZE);
	ferry_sha256(buf, PACK_HEADER_SIZE + (size_t)f.count * PACK_INDEX_RECORD_SIZE, &f.sum);
	free(buf);
	pack_footer_encode(p + size - PACK_FOOTER_SIZE, &f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse_both(data, size);

	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	reseal(copy, size);
	parse_both(copy, size);
	free(copy);
	return 0;
}
