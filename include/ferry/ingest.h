/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Turning written blocks into stored chunks and map updates: shared by the
 * replicator (applying segments) and ferryfs (writes into failover clones).
 *
 * Writes are cut at chunk boundaries of the disk. A piece covering a whole
 * aligned chunk becomes that chunk (so initial replication deduplicates);
 * smaller pieces are packed together, block after block, into new chunks,
 * and the map points each run of blocks at (chunk, block in chunk). That is
 * what keeps small writes small: 2,000 scattered 4 KiB writes cost 2,000
 * blocks of storage, not 2,000 chunks. All new objects (chunks and map
 * nodes) go into one pack.
 *
 * Protocol: ferry_ingest_new, any number of write/zero calls on maps opened
 * with ferry_ingest_objsrc, ferry_ingest_flush, ferry_map_commit of each
 * map, ferry_ingest_finish (the pack is durable), then inside the caller's
 * catalog transaction ferry_ingest_record and the caller's own rows. Not
 * thread-safe; catalog look-ups take the vault lock.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/map.h"
#include "ferry/vault.h"

struct ferry_ingest;

int ferry_ingest_new(struct ferry_vault *v, struct ferry_ingest **ret);
/*
 * Stores every object in this ingest's pack even where the vault already
 * has it. For writers that run beside garbage collection (ferryfs clones):
 * an object GC found dead may go at any moment, so it must not be reused;
 * the new pack itself is protected by its intent.
 */
void ferry_ingest_no_vault_dedup(struct ferry_ingest *in);
/* Discards whatever was not finished and recorded. */
struct ferry_ingest *ferry_ingest_free(struct ferry_ingest *in);

/* An objsrc for maps changed through this ingest: nodes put go into the
 * pack and stay readable from memory until the catalog knows them. */
const struct ferry_objsrc *ferry_ingest_objsrc(struct ferry_ingest *in);

/* Blocks [block, block+nblocks) of the disk behind m now hold data (which
 * must stay valid only during the call). Zero blocks become zero runs. */
int ferry_ingest_write(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		       const void *data, uint64_t nblocks);
/* One whole, aligned chunk whose id the caller computed: blocks [block,
 * block + chunk size / 4096) hold data, SHA-256 id. frame (flen bytes, or
 * NULL) is a zstd frame of exactly data that the pack keeps as it is rather
 * than compressing data again. -EINVAL unless block is chunk aligned and the
 * whole chunk lies inside the disk. */
int ferry_ingest_write_chunk(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
			     const void *data, const struct ferry_id *id, const void *frame,
			     size_t flen);
int ferry_ingest_zero(struct ferry_ingest *in, struct ferry_map *m, uint64_t block,
		      uint64_t nblocks);
/* Adds a record (records.h: FERRY_OBJ_POINT, _STATE, ...) of len bytes to
 * the pack, unless the vault already has it; ret_id gets its id. Call before
 * ferry_ingest_finish. */
int ferry_ingest_add_record(struct ferry_ingest *in, enum ferry_obj_type type, const void *buf,
			    size_t len, struct ferry_id *ret_id);
/* Places pending small writes into their maps; call before committing maps. */
int ferry_ingest_flush(struct ferry_ingest *in);
/* Writes the pack durably (nothing if no object was added). */
int ferry_ingest_finish(struct ferry_ingest *in);
/* Adds the pack and its objects to the catalog: call inside a transaction
 * after ferry_ingest_finish. */
int ferry_ingest_record(struct ferry_ingest *in);
/* Stored bytes of the pack (after finish). */
uint64_t ferry_ingest_stored_bytes(const struct ferry_ingest *in);
/* The id of the pack this ingest writes, known from the start: writers
 * other than the replicator announce it as a pack intent (catalog.h). */
uint64_t ferry_ingest_pack_id(const struct ferry_ingest *in);
