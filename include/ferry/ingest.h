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
 * This is the one way objects enter a vault (docs/architecture.md, "Ingest
 * and GC"): segment apply, clone flushes, GC's pack rewrites and stored
 * records all take it. The protocol:
 *
 *   ferry_ingest_new
 *   write / zero / add_record / ...      maps opened with ferry_ingest_objsrc
 *   ferry_ingest_flush, ferry_map_commit of each map changed
 *   ferry_ingest_commit(rows)            one pack, one catalog transaction
 *
 * ferry_ingest_commit announces the pack as an intent before its file
 * exists (GC never takes an announced pack for an orphan), writes it
 * durably, then in one transaction records the pack and its objects under
 * a new ingest generation, stamps that generation on every pack whose
 * objects this ingest reused instead of storing again (GC never drops or
 * rewrites a pack stamped after its snapshot), runs the caller's rows and
 * retracts the intent. -ESTALE when an object it reused was collected in
 * the meantime: start over. Not thread-safe; catalog use takes the vault
 * lock.
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
 * has it, and points the index at the new copies. For writers that run
 * beside garbage collection and must never be told to start over (ferryfs
 * clones, whose fsync cannot fail because GC ran): their commit reuses
 * nothing, so it never meets -ESTALE.
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
 * ferry_ingest_commit. */
int ferry_ingest_add_record(struct ferry_ingest *in, enum ferry_obj_type type, const void *buf,
			    size_t len, struct ferry_id *ret_id);
/* Adds an object whose id the caller vouches for (bytes read and verified
 * from the vault: GC's rewrite of a pack). Stored unless the vault or this
 * pack has it, or always under ferry_ingest_no_vault_dedup. */
int ferry_ingest_add_object(struct ferry_ingest *in, enum ferry_obj_type type,
			    const struct ferry_id *id, const void *buf, size_t len);
/* Places pending small writes into their maps; call before committing maps. */
int ferry_ingest_flush(struct ferry_ingest *in);

struct ferry_catalog;
/* The caller's own rows, written in the commit's transaction; a negative
 * return rolls everything back and is returned by ferry_ingest_commit. */
typedef int (*ferry_ingest_rows_t)(struct ferry_catalog *c, void *userdata);
/*
 * Seals and records (the protocol above). rows may be NULL. Must be called
 * with no transaction open on the vault's catalog; takes the vault lock.
 * After a failure (-EBUSY: the catalog stayed locked; -ESTALE; or the
 * caller's own) the pack stays durable and announced, and the call may be
 * repeated; ferry_ingest_free of an ingest never committed retracts the
 * intent, which leaves the pack to GC.
 */
int ferry_ingest_commit(struct ferry_ingest *in, ferry_ingest_rows_t rows, void *userdata);
/*
 * Who announces a pack (its intent's owner): "HOST BOOT-ID PID", so that
 * GC can tell the intent of a writer that died (killed between its intent
 * and its commit) from one still at work. ferry_ingest_owner_gone says 1
 * only when sure: this host, and an earlier boot or no such process.
 */
#define FERRY_INGEST_OWNER_MAX 384
void ferry_ingest_owner(char *buf, size_t size);
int ferry_ingest_owner_gone(const char *owner);
/* Stored bytes of the pack (after commit). */
uint64_t ferry_ingest_stored_bytes(const struct ferry_ingest *in);
