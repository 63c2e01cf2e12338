/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk maps: for every 4 KiB block of a disk, where its bytes are (a block
 * inside a stored chunk) or that it is zero. A map is a tree of immutable,
 * content-addressed nodes (leaves hold run-length encoded runs), so two
 * recovery points share every node their disks have in common, and committing
 * a changed map writes only the nodes on the paths to changed blocks:
 * O(change), never O(disk size). Format: docs/format/map.md.
 *
 * The map does not know the store or the catalog: it gets and puts nodes
 * through a ferry_objsrc. A map is safe for concurrent lookups from many
 * threads; set and commit must not run concurrently with anything else.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

/* Blocks covered by one leaf and children of one inner node. */
#define FERRY_MAP_LEAF_BLOCKS 512u
#define FERRY_MAP_FANOUT 512u

struct ferry_objsrc {
	/* Loads node id into a new buffer (the caller frees it). */
	int (*get)(void *userdata, const struct ferry_id *id, void **ret_buf, size_t *ret_len);
	/* Stores node id durably enough for the caller's commit protocol. */
	int (*put)(void *userdata, const struct ferry_id *id, const void *buf, size_t len);
	void *userdata;
};

/* A run of blocks with one meaning. */
struct ferry_extent {
	uint64_t block;        /* first disk block of the run */
	uint64_t count;        /* number of blocks */
	int zero;              /* 1: reads as zeros (never written, or trimmed) */
	struct ferry_id chunk; /* when !zero: the chunk holding the bytes */
	uint32_t chunk_block;  /* block index inside the chunk of the run's first block */
};

struct ferry_map;

/* Opens the map of a disk of nblocks blocks. A NULL or all-zero root is the
 * empty map (every block zero). Nodes load lazily through src, which must
 * outlive the map. */
int ferry_map_open(const struct ferry_objsrc *src, const struct ferry_id *root, uint64_t nblocks,
		   struct ferry_map **ret);
struct ferry_map *ferry_map_free(struct ferry_map *m);
uint64_t ferry_map_nblocks(const struct ferry_map *m);

/* Maps blocks [block, block+count) to consecutive blocks of chunk starting at
 * chunk_block; a NULL chunk maps them to zero. -ERANGE past the end. */
int ferry_map_set(struct ferry_map *m, uint64_t block, uint64_t count, const struct ferry_id *chunk,
		  uint32_t chunk_block);

/* The run that holds block, as long as it extends (possibly beyond one leaf
 * when whole subtrees are zero). -ERANGE past the end, -EBADMSG on a damaged
 * node. */
int ferry_map_lookup(struct ferry_map *m, uint64_t block, struct ferry_extent *ret);

/* Writes every changed node through src->put and returns the new root
 * (all-zero id for an all-zero disk). The map stays open and clean. */
int ferry_map_commit(struct ferry_map *m, struct ferry_id *ret_root);

/*
 * Walks the tree under root. node_cb sees every node id before its
 * children; returning 1 from it skips that subtree (already seen), a
 * negative value stops the walk. extent_cb, if not NULL, sees every
 * non-zero run in disk order. Used by check, GC and SEEK_DATA.
 */
int ferry_map_walk(const struct ferry_objsrc *src, const struct ferry_id *root, uint64_t nblocks,
		   int (*node_cb)(const struct ferry_id *id, void *userdata),
		   int (*extent_cb)(const struct ferry_extent *e, void *userdata), void *userdata);
