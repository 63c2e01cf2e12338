/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the ack parser and the segment-name parser of the cache.
 * Any input must be refused cleanly or decode to an ack that encodes back
 * to the same bytes (1.0 acks carry nothing a reader drops); nothing over
 * CACHE_ACK_MAX bytes is an ack.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache-internal.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferry_ack a;
	if (cache_ack_parse(data, size, NULL, &a) == 0) {
		if (size > CACHE_ACK_MAX)
			abort();
		/* The VM name sits at offset 57 with its length at 56. An ack
		 * accepted with a name longer than a VM's, or past the end of
		 * the input, is itself a finding. */
		char vm[65];
		if (size < 57 || data[56] >= sizeof(vm) || size - 57 < data[56])
			abort();
		memcpy(vm, data + 57, data[56]);
		vm[data[56]] = 0;
		struct ferry_ack b;
		if (cache_ack_parse(data, size, vm, &b) != 0 || b.seq != a.seq)
			abort();
		uint8_t out[CACHE_ACK_MAX];
		size_t len;
		if (cache_ack_format(vm, &a, out, sizeof(out), &len) < 0)
			abort();
		/* Equal unless the input was a later minor with extra fields. */
		if (len == size && get_le16(data + 10) == 0 && memcmp(out, data, len) != 0)
			abort();
	}

	/* The same bytes as a blob name in a listing. */
	_cleanup_free_ char *name = malloc(size + 1);
	if (!name)
		return 0;
	memcpy(name, data, size);
	name[size] = 0;
	uint64_t seq;
	if (cache_segment_name_parse(name, "vm1", &seq) == 0) {
		char again[128];
		if (cache_segment_name("vm1", seq, again, sizeof(again)) < 0 ||
		    strcmp(again, name) != 0)
			abort();
	}
	return 0;
}
