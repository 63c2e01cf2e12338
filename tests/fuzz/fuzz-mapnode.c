/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the disk-map node decoder: any input must decode cleanly
 * or fail with -EBADMSG, and whatever decodes must re-encode to the very same
 * bytes (the encoding is canonical: one content, one node id).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"
#include "map-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct map_decoded dec;
static uint8_t out[MAP_NODE_MAX_SIZE];

static void one(const uint8_t *data, size_t size, unsigned limit)
{
	int r = map_node_decode(data, size, limit, &dec);
	if (r == -EBADMSG)
		return;
	if (r != 0)
		abort();

	size_t len;
	if (dec.kind == MAP_NODE_KIND_LEAF)
		len = map_leaf_encode(dec.runs, dec.n, out);
	else
		len = map_inner_encode(dec.level, dec.idx, dec.ids, dec.n, out);
	if (len != size || memcmp(out, data, size) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size, FERRY_MAP_LEAF_BLOCKS);
	/* the last leaf or inner node of a disk is short */
	if (size > 0)
		one(data, size, data[size - 1] + 1u);
	return 0;
}
