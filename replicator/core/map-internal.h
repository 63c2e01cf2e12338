/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The disk-map node codec, pure and allocation-free, shared by map.c, the
 * unit test and the fuzz target. Encoding is canonical (runs sorted and
 * merged, children sorted, empty nodes never stored) so equal content always
 * gets the same node id and two recovery points share every equal node.
 * Format: docs/format/map.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"
#include "ferry/map.h"

#define MAP_NODE_MAGIC "FMAP"
#define MAP_NODE_VERSION 1
#define MAP_NODE_KIND_LEAF 0x4c  /* 'L' */
#define MAP_NODE_KIND_INNER 0x49 /* 'I' */
#define MAP_NODE_HEADER_SIZE 12u
#define MAP_LEAF_ENTRY_SIZE 40u
#define MAP_INNER_ENTRY_SIZE 34u
/* Levels above the leaves: 512 * 512^7 > 2^64 blocks, so 7 is enough. */
#define MAP_MAX_LEVEL 7u
#define MAP_NODE_MAX_SIZE (MAP_NODE_HEADER_SIZE + FERRY_MAP_LEAF_BLOCKS * MAP_LEAF_ENTRY_SIZE)

/* A run of a leaf: blocks [start, start+count) of the leaf map to chunk
 * blocks [chunk_block, chunk_block+count). Only non-zero runs exist. */
struct map_run {
	uint16_t start;
	uint16_t count;
	uint32_t chunk_block;
	struct ferry_id chunk;
};

/* A decoded node. Leaves fill runs[0..n), inner nodes idx/ids[0..n). */
struct map_decoded {
	unsigned kind;
	unsigned level;
	unsigned n;
	struct map_run runs[FERRY_MAP_LEAF_BLOCKS];
	uint16_t idx[FERRY_MAP_FANOUT];
	struct ferry_id ids[FERRY_MAP_FANOUT];
};

/*
 * Decodes and validates one node. limit is how many blocks (leaf) or
 * children (inner) of this node lie inside the disk: anything at or past it
 * is refused, as is every non-canonical form. -EBADMSG on any defect.
 */
int map_node_decode(const void *buf, size_t len, unsigned limit, struct map_decoded *ret);

/* Encoders; buf must hold MAP_NODE_MAX_SIZE bytes; return the length. Input
 * must be canonical (asserted): n >= 1, sorted, merged, in range. */
size_t map_leaf_encode(const struct map_run *runs, unsigned n, uint8_t *buf);
size_t map_inner_encode(unsigned level, const uint16_t *idx, const struct ferry_id *ids, unsigned n,
			uint8_t *buf);

/* Depth (level of the root) of the map of a disk of nblocks blocks. */
unsigned map_depth(uint64_t nblocks);

/* Bounds how many clean decoded nodes an open map keeps (tests use a tiny
 * bound to exercise eviction). */
void map_set_cache_limit(struct ferry_map *m, size_t limit);
/* Clean decoded nodes currently cached (excluding the root). */
size_t map_cached_nodes(const struct ferry_map *m);
