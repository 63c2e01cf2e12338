/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The content-addressed store: objects (chunks of disk data, map nodes,
 * recovery-point records) compressed with zstd and kept in pack files of
 * tens of MiB on a blobs location. Each pack carries its own index, so the
 * catalog can be rebuilt from the store alone. Every read verifies the id.
 *
 * The store keeps no index of its own: where an object lives (its ferry_loc)
 * is the catalog's business. Format: docs/format/pack.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

enum ferry_obj_type {
	FERRY_OBJ_CHUNK = 1, /* disk bytes, a multiple of 4 KiB, <= chunk size */
	FERRY_OBJ_NODE = 2,  /* a disk-map tree node (map.h) */
	FERRY_OBJ_POINT = 3, /* a recovery-point record (records.h) */
	FERRY_OBJ_VM = 4,    /* a VM's settings, disks and resources (records.h) */
	FERRY_OBJ_STATE = 5, /* a VM's applied state after one segment (records.h) */
	FERRY_OBJ_VAULT = 6, /* the vault's own settings (records.h) */
};

/* Where one object lives. */
struct ferry_loc {
	uint64_t pack;   /* pack id: packs/<16 hex digits>.pack */
	uint64_t offset; /* of the object's entry header inside the pack */
	uint32_t clen;   /* stored (compressed) payload length */
	uint32_t plen;   /* plain length */
	uint8_t type;    /* enum ferry_obj_type */
};

/* Largest plain object the store accepts. */
#define FERRY_OBJ_MAX (4u * 1024u * 1024u)
/* A pack is closed once it holds about this many stored bytes. */
#define FERRY_PACK_TARGET (32u * 1024u * 1024u)

struct ferry_blobs;
struct ferry_store;
struct ferry_pack_writer;

/* Opens the store at url (see blobs.h); create makes an empty one. */
int ferry_store_open(const char *url, int create, struct ferry_store **ret);
struct ferry_store *ferry_store_free(struct ferry_store *s);
const char *ferry_store_url(const struct ferry_store *s);
/* The blobs location under the store, still owned by it: lets tests install
 * a fault callback (ferry_blobs_set_fault) under a live store. */
struct ferry_blobs *ferry_store_blobs(struct ferry_store *s);

/*
 * Starts a new pack with a fresh random id. Objects are compressed as they
 * are added and held in memory until finish; nothing is visible before
 * finish returns, and a writer freed unfinished leaves no trace.
 */
int ferry_store_pack_begin(struct ferry_store *s, struct ferry_pack_writer **ret);
/* Adds an object whose id is SHA-256 of buf (the caller computed it). The
 * same id added twice in one pack is stored once; ret gets its location. */
int ferry_pack_writer_add(struct ferry_pack_writer *w, enum ferry_obj_type type,
			  const struct ferry_id *id, const void *buf, size_t len,
			  struct ferry_loc *ret);
/*
 * As ferry_pack_writer_add, for an object that arrives compressed already:
 * frame is one zstd frame of flen bytes whose content is exactly buf (the
 * caller decompressed it into buf and hashed that). It is stored as it is
 * when smaller than len, so the object is not compressed a second time;
 * otherwise buf is stored raw.
 */
int ferry_pack_writer_add_frame(struct ferry_pack_writer *w, enum ferry_obj_type type,
				const struct ferry_id *id, const void *buf, size_t len,
				const void *frame, size_t flen, struct ferry_loc *ret);
/* Whether id was already added to this pack; fills ret if so. */
int ferry_pack_writer_find(struct ferry_pack_writer *w, const struct ferry_id *id,
			   struct ferry_loc *ret);
uint64_t ferry_pack_writer_bytes(const struct ferry_pack_writer *w);
uint32_t ferry_pack_writer_count(const struct ferry_pack_writer *w);
uint64_t ferry_pack_writer_id(const struct ferry_pack_writer *w);
/* Writes the pack (header, entries, index, footer) durably. An empty writer
 * writes nothing and succeeds. */
int ferry_pack_writer_finish(struct ferry_pack_writer *w);
struct ferry_pack_writer *ferry_pack_writer_free(struct ferry_pack_writer *w);

/*
 * Reads the object at loc, decompresses it into buf (bufsize >= loc->plen)
 * and checks that its SHA-256 equals id: -EBADMSG on any mismatch or damage,
 * -ENOENT if the pack is gone.
 */
int ferry_store_read(struct ferry_store *s, const struct ferry_loc *loc, const struct ferry_id *id,
		     void *buf, size_t bufsize);

/*
 * Puts an on-disk object cache (diskcache.h) in front of reads that go over
 * the network (a store on object storage): ferry_store_read looks there
 * before the ranged GET, verifies a hit like any pack read (a damaged entry
 * is dropped and fetched again), and stores what it fetched and verified.
 * A local store reads with pread and leaves dc alone. dc stays the
 * caller's: it must outlive its use here, or be unset with NULL first.
 * Set it before reads start. Returns 0.
 */
struct ferry_diskcache;
int ferry_store_set_disk_cache(struct ferry_store *s, struct ferry_diskcache *dc);
/*
 * Whether reads from s are network requests (object storage), where a
 * request costs far more than its bytes and readers coalesce them with
 * ferry_store_read_run. Also 1 while a fault callback is set on the blobs
 * location (blobs.h), which routes even local reads through the seam.
 */
int ferry_store_remote(const struct ferry_store *s);
/* The end of loc's entry in its pack: the offset where the entry stored
 * right after it starts. Entries a and b lie back to back when b.pack ==
 * a.pack and b.offset == ferry_store_entry_end(&a). */
uint64_t ferry_store_entry_end(const struct ferry_loc *loc);

/* One object of a ferry_store_read_run. */
struct ferry_store_read {
	struct ferry_loc loc;
	const struct ferry_id *id;
	void *buf; /* bufsize >= loc.plen */
	size_t bufsize;
	int r; /* out: what ferry_store_read would have returned */
};
/*
 * Reads the n objects of reads, whose entries lie back to back in one pack
 * in that order, with one ranged read (one GET on object storage), and
 * verifies and decompresses each exactly as ferry_store_read does (loc,
 * entry checksum, size, SHA-256 == id); the disk cache (if set) is offered
 * every entry that checks out, and is not consulted. Sets every r and
 * returns how many objects are good, or, when the run could not be read at
 * all, -errno (-EINVAL: not back to back; -ENOBUFS: a buffer too small;
 * -EBADMSG: a damaged loc; -ENOENT: the pack is gone), which every r then
 * holds too.
 */
int ferry_store_read_run(struct ferry_store *s, struct ferry_store_read *reads, size_t n);
/*
 * ferry_store_read from the disk cache alone, never the network (-ENOENT on
 * a miss, on a local store, or with no disk cache; a damaged entry is
 * dropped and is a miss): what a reader that coalesces takes before
 * deciding what to fetch. ferry_store_cache_fill offers the disk cache the
 * entry of id as the pack holds it (entry header and payload, the
 * ferry_store_entry_end(loc) - loc->offset bytes at loc), which the caller
 * has verified. Fill failures are not reported: a cache that cannot
 * take it costs only a later GET.
 */
int ferry_store_read_cached(struct ferry_store *s, const struct ferry_loc *loc,
			    const struct ferry_id *id, void *buf, size_t bufsize);
void ferry_store_cache_fill(struct ferry_store *s, const struct ferry_id *id, const void *entry,
			    size_t len);

/* Every pack in the store, in id order. */
int ferry_store_list_packs(struct ferry_store *s,
			   int (*cb)(uint64_t pack, uint64_t size, void *userdata), void *userdata);
/*
 * Reads and verifies a pack's own index (footer checksum, bounds) and calls
 * cb for each object. -EBADMSG if the pack is truncated or damaged. With
 * read_data set, every object is also read and verified against its id.
 */
int ferry_store_pack_index(struct ferry_store *s, uint64_t pack, int read_data,
			   int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
				     void *userdata),
			   void *userdata);
int ferry_store_delete_pack(struct ferry_store *s, uint64_t pack);
