/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The catalog: the vault's SQLite database (WAL mode) and the only module
 * that speaks SQL. It indexes the store (object id -> location), and holds
 * the VMs, their disks and live maps, target resources, policies, recovery
 * points, applied sequence numbers and events. Schema: docs/catalog.md.
 *
 * A catalog handle is not thread-safe: share it under a lock or open one
 * per thread. Writers group changes between begin and commit; every SQLite
 * BUSY surfaces as -EBUSY, a damaged database as -EBADMSG.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"
#include "ferry/store.h"

#define FERRY_CATALOG_SCHEMA_VERSION 4
#define FERRY_NAME_MAX 64
#define FERRY_URL_MAX 1024
#define FERRY_PATH_MAX 4096

struct ferry_catalog;

/* Creates a new catalog at path (-EEXIST if there is one). */
int ferry_catalog_create(const char *path, uint32_t chunk_size, const char *store_url);
/* Opens and migrates forward; -EPROTONOSUPPORT for a newer schema. */
int ferry_catalog_open(const char *path, int readonly, struct ferry_catalog **ret);
struct ferry_catalog *ferry_catalog_free(struct ferry_catalog *c);

/* A write transaction (BEGIN IMMEDIATE: the write lock from the start). */
int ferry_catalog_begin(struct ferry_catalog *c);
/* A write transaction whose commit is visible to every other connection at
 * once but not synced to disk: a power loss may undo it. Only for rows
 * that matter while their writer lives (pack intents: a writer gone with
 * the power wrote nothing that needs them). */
int ferry_catalog_begin_unsynced(struct ferry_catalog *c);
/* A read transaction: every read until commit or rollback sees the catalog
 * as it was at this call, whatever other connections commit meanwhile. */
int ferry_catalog_begin_read(struct ferry_catalog *c);
int ferry_catalog_commit(struct ferry_catalog *c);
/* Whether a transaction is open on this handle. */
int ferry_catalog_in_transaction(const struct ferry_catalog *c);
/* Never fails from the caller's point of view; safe without a begin. */
void ferry_catalog_rollback(struct ferry_catalog *c);

/* Vault settings: chunk_size, store_url, vault_id, created_ns. */
int ferry_catalog_get_setting(struct ferry_catalog *c, const char *key, char *buf, size_t bufsize);
int ferry_catalog_set_setting(struct ferry_catalog *c, const char *key, const char *value);

/* ---- VMs ---- */

enum ferry_vm_state {
	FERRY_VM_INITIAL = 1, /* enabled, no consistency marker applied yet */
	FERRY_VM_PROTECTED = 2,
	FERRY_VM_ERROR = 3,        /* last apply failed; see error */
	FERRY_VM_FAILED_OVER = 4,  /* replication stopped, a failover clone runs */
	FERRY_VM_COMMITTED = 5,    /* failover made final */
	FERRY_VM_REPROTECTING = 6, /* replicating back to the source site */
	FERRY_VM_FAILED_BACK = 7,  /* back at the source; protection resumes */
	/* The agent's chain and the vault disagree (lost or damaged segments,
	 * a restored or foreign agent state): the vault published its image's
	 * fingerprints and waits for the agent's first segment chained to
	 * them (struct ferry_vm_resync). */
	FERRY_VM_RESYNC_REQUIRED = 8,
	FERRY_VM_RESYNCING = 9, /* that segment applied; the cycle's marker is not yet */
};

/* A short name for the state, as the CLI and ferryfs show it. */
const char *ferry_vm_state_name(enum ferry_vm_state s);

struct ferry_vm {
	int64_t id;
	char name[FERRY_NAME_MAX + 1];
	enum ferry_vm_state state;
	char error[512];               /* last error, "" if none */
	char cache_url[FERRY_URL_MAX]; /* never holds a secret */
	int64_t crash_interval_s;      /* 0 = a point at every marker */
	int64_t app_interval_s;        /* 0 = off */
	int64_t retention_s;
	int64_t created_ns;
	uint64_t applied_seq; /* last applied segment */
	struct ferry_id applied_digest;
	uint64_t marker_seq;         /* segment of the last applied marker */
	int64_t marker_ns;           /* time of the last applied marker */
	uint64_t initial_done_bytes; /* progress of initial replication */
	uint64_t initial_total_bytes;
	/* Records in the store (records.h) that describe this VM: its VM
	 * record and the STATE record of the last applied segment. Null ids
	 * if none. GC keeps them; ferry attach rebuilds the VM from them. */
	struct ferry_id record;
	struct ferry_id state_record;
};

/* Fills vm->id on success; -EEXIST if the name is taken. */
int ferry_catalog_vm_add(struct ferry_catalog *c, struct ferry_vm *vm);
int ferry_catalog_vm_get(struct ferry_catalog *c, const char *name, struct ferry_vm *ret);
int ferry_catalog_vm_get_by_id(struct ferry_catalog *c, int64_t id, struct ferry_vm *ret);
/* Updates every mutable field of vm (by id). */
int ferry_catalog_vm_update(struct ferry_catalog *c, const struct ferry_vm *vm);
/* VMs in name order. */
int ferry_catalog_vm_list(struct ferry_catalog *c,
			  int (*cb)(const struct ferry_vm *vm, void *userdata), void *userdata);

/* Target resources and source settings, as kind -> value pairs:
 * source-group, source-network, source-subnet, target-group, target-network,
 * target-subnet, availability-set, cache, target-storage, network-mapping
 * (value "SRC->DST"), reverse-network-mapping, agent-config, tracker,
 * group (the VM's consistency group, a name); the VM's
 * description: vm-cpus, vm-memory-mib, nic.N ("mac=..[,ip=A/P],model=..");
 * its failover bookkeeping: role ("back" in a vault that re-protect
 * seeded, absent = forward; replicator/lib/fostate.h) and reverse-cache;
 * and its health (replicator/lib/health.h): rpo-target (decimal seconds)
 * and health (the state ferry-replicator last recorded). */
int ferry_catalog_resource_set(struct ferry_catalog *c, int64_t vm_id, const char *kind,
			       const char *value);
int ferry_catalog_resource_get(struct ferry_catalog *c, int64_t vm_id, const char *kind, char *buf,
			       size_t bufsize);
/* In insertion order. */
int ferry_catalog_resource_list(struct ferry_catalog *c, int64_t vm_id,
				int (*cb)(const char *kind, const char *value, void *userdata),
				void *userdata);
/* The VMs whose resource kind has exactly value, in name order: the
 * members of a consistency group are the VMs with "group" = its name. */
int ferry_catalog_vm_list_by_resource(struct ferry_catalog *c, const char *kind, const char *value,
				      int (*cb)(const struct ferry_vm *vm, void *userdata),
				      void *userdata);

/* ---- disks and live maps ---- */

struct ferry_disk {
	int64_t vm_id;
	uint16_t idx; /* source order, 0-based */
	char name[FERRY_NAME_MAX + 1];
	char source_path[FERRY_PATH_MAX];
	uint64_t size;             /* bytes, 0 until the agent declared it */
	struct ferry_id live_root; /* map at the last applied marker */
	struct ferry_id work_root; /* map after the last applied segment */
};

int ferry_catalog_disk_add(struct ferry_catalog *c, const struct ferry_disk *d);
int ferry_catalog_disk_get(struct ferry_catalog *c, int64_t vm_id, const char *name,
			   struct ferry_disk *ret);
/* Updates size, live_root and work_root of (vm_id, idx). */
int ferry_catalog_disk_update(struct ferry_catalog *c, const struct ferry_disk *d);
/* Disks of a VM in idx order. */
int ferry_catalog_disk_list(struct ferry_catalog *c, int64_t vm_id,
			    int (*cb)(const struct ferry_disk *d, void *userdata), void *userdata);

/* ---- recovery points ---- */

struct ferry_point {
	int64_t id;
	int64_t vm_id;
	char name[40]; /* 20261127T053000Z, with -0002... when a second repeats */
	int64_t time_ns;
	int consistency;        /* enum ferry_consistency */
	uint64_t seq;           /* segment holding the marker */
	struct ferry_id record; /* its POINT record in the store, or null */
	/* 0; or R when the marker was the VM's cut of round R of its
	 * consistency group (schema version 4; 0 in older catalogs). */
	uint64_t group_round;
};

struct ferry_point_disk {
	uint16_t idx;
	char name[FERRY_NAME_MAX + 1];
	uint64_t size;
	struct ferry_id root;
};

/* Fills p->id. With p->name empty, picks a unique name from time_ns and
 * fills p->name; with p->name set, uses it (-EEXIST if taken). */
int ferry_catalog_point_add(struct ferry_catalog *c, struct ferry_point *p,
			    const struct ferry_point_disk *disks, size_t ndisks);
/* 1 if the VM has a point of that name, 0 if not. */
int ferry_catalog_point_name_taken(struct ferry_catalog *c, int64_t vm_id, const char *name);
/* The name point_add would pick for a point at time_ns. */
int ferry_catalog_point_pick_name(struct ferry_catalog *c, int64_t vm_id, int64_t time_ns,
				  char name[40]);
/* Points of a VM, oldest first. */
int ferry_catalog_point_list(struct ferry_catalog *c, int64_t vm_id,
			     int (*cb)(const struct ferry_point *p, void *userdata),
			     void *userdata);
int ferry_catalog_point_disks(struct ferry_catalog *c, int64_t point_id,
			      int (*cb)(const struct ferry_point_disk *d, void *userdata),
			      void *userdata);
int ferry_catalog_point_delete(struct ferry_catalog *c, int64_t point_id);

/* ---- the store index ---- */

/* -ENOENT if the store holds no such object. */
int ferry_catalog_object_get(struct ferry_catalog *c, const struct ferry_id *id,
			     struct ferry_loc *ret);
/* Adding a known id keeps the first location. */
int ferry_catalog_object_put(struct ferry_catalog *c, const struct ferry_id *id,
			     const struct ferry_loc *loc);
/* Points a known id at a new location (a copy in a newer pack). */
int ferry_catalog_object_move(struct ferry_catalog *c, const struct ferry_id *id,
			      const struct ferry_loc *loc);
int ferry_catalog_object_delete(struct ferry_catalog *c, const struct ferry_id *id);
int ferry_catalog_object_list(struct ferry_catalog *c,
			      int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
					void *userdata),
			      void *userdata);
/* The objects the index places in one pack, in pack order. */
int ferry_catalog_object_list_pack(struct ferry_catalog *c, uint64_t pack,
				   int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
					     void *userdata),
				   void *userdata);
/* gen: the ingest generation that recorded it (ferry_catalog_gen_next). */
int ferry_catalog_pack_add(struct ferry_catalog *c, uint64_t pack, uint64_t size, uint32_t count,
			   uint64_t gen);
int ferry_catalog_pack_delete(struct ferry_catalog *c, uint64_t pack);
int ferry_catalog_pack_list(struct ferry_catalog *c,
			    int (*cb)(uint64_t pack, uint64_t size, uint32_t count, void *userdata),
			    void *userdata);
/* Sum of stored bytes over all packs. */
int ferry_catalog_store_bytes(struct ferry_catalog *c, uint64_t *ret);
/* The store in figures, read in one snapshot: objects indexed, their plain
 * bytes (unique content before compression), and the logical bytes the
 * vault presents (disk sizes summed over every recovery point and live
 * image). One scan of the object index: not for every segment. */
struct ferry_catalog_store_stats {
	uint64_t objects, unique_bytes, logical_bytes;
};
int ferry_catalog_store_stats(struct ferry_catalog *c, struct ferry_catalog_store_stats *ret);

/*
 * Ingest generations (ingest.h, docs/architecture.md "Ingest and GC"): a
 * counter that every ingest commit advances. A pack carries the generation
 * that last recorded it or reused one of its objects, so garbage collection
 * can tell, from the generation current in its snapshot, which packs
 * changed hands after it looked.
 */
/* Advances the counter (inside a write transaction) and returns the new value. */
int ferry_catalog_gen_next(struct ferry_catalog *c, uint64_t *ret);
int ferry_catalog_gen_current(struct ferry_catalog *c, uint64_t *ret);
/* Stamps gen on a pack; -ENOENT if the catalog no longer knows it (GC
 * took it since the caller looked one of its objects up). */
int ferry_catalog_pack_touch(struct ferry_catalog *c, uint64_t pack, uint64_t gen);
/* The generation of a pack; -ENOENT if the catalog does not know it. */
int ferry_catalog_pack_gen(struct ferry_catalog *c, uint64_t pack, uint64_t *ret);
/*
 * Whether a pack file found in the store belongs to anybody, read in one
 * snapshot: 1 if the catalog records it, 2 if a writer announced it (its
 * intent's creation time in *ret_intent_ns, the writer's identity,
 * ferry_ingest_owner, in owner), 0 if neither (an orphan).
 */
int ferry_catalog_pack_claim(struct ferry_catalog *c, uint64_t pack, int64_t *ret_intent_ns,
			     char *owner, size_t ownersize);

/* ---- failovers and their writable clones ---- */

enum ferry_failover_kind {
	FERRY_FAILOVER_TEST = 1, /* isolated network, replication continues */
	FERRY_FAILOVER_REAL = 2, /* target network, replication stopped */
};

enum ferry_failover_state {
	FERRY_FAILOVER_ACTIVE = 1,
	FERRY_FAILOVER_COMMITTED = 2,
};

struct ferry_failover {
	int64_t id;
	int64_t vm_id;
	char name[FERRY_NAME_MAX + 1];
	enum ferry_failover_kind kind;
	enum ferry_failover_state state;
	char point_name[48]; /* the recovery point used (or "seq N at TIME") */
	int64_t point_time_ns;
	char network[FERRY_NAME_MAX + 1];
	char subnet[FERRY_NAME_MAX + 1];
	int64_t created_ns;
	char accel[32]; /* qemu accelerators for the VM definition, e.g. "kvm:tcg" */
};

/* One disk of a clone: its map started as base_root (the point's) and is
 * root now; blocks where the two differ were written after failover. */
struct ferry_clone_disk {
	int64_t failover_id;
	uint16_t idx;
	char name[FERRY_NAME_MAX + 1];
	uint64_t size;
	struct ferry_id base_root;
	struct ferry_id root;
};

/* Fills f->id; -EEXIST if (vm, name) is taken. */
int ferry_catalog_failover_add(struct ferry_catalog *c, struct ferry_failover *f,
			       const struct ferry_clone_disk *disks, size_t ndisks);
int ferry_catalog_failover_get(struct ferry_catalog *c, int64_t vm_id, const char *name,
			       struct ferry_failover *ret);
/* Updates state, point, network and subnet (by id). */
int ferry_catalog_failover_update(struct ferry_catalog *c, const struct ferry_failover *f);
/* Removes it and its clone disks (their data goes at the next GC). */
int ferry_catalog_failover_delete(struct ferry_catalog *c, int64_t failover_id);
int ferry_catalog_failover_list(struct ferry_catalog *c, int64_t vm_id,
				int (*cb)(const struct ferry_failover *f, void *userdata),
				void *userdata);
int ferry_catalog_clone_disks(struct ferry_catalog *c, int64_t failover_id,
			      int (*cb)(const struct ferry_clone_disk *d, void *userdata),
			      void *userdata);
int ferry_catalog_clone_disk_set_root(struct ferry_catalog *c, int64_t failover_id, uint16_t idx,
				      const struct ferry_id *root);

/*
 * Pack intents: every ingest (ingest.h) records its pack id, with its
 * owner (ferry_ingest_owner), before it writes the pack and removes it in
 * the transaction that records the pack, so GC never takes a pack in
 * flight for an orphan.
 */
int ferry_catalog_pack_intent_add(struct ferry_catalog *c, uint64_t pack, const char *owner);
int ferry_catalog_pack_intent_delete(struct ferry_catalog *c, uint64_t pack);

/* ---- jobs: the history of failover operations ---- */

struct ferry_job {
	int64_t id;
	char vm[FERRY_NAME_MAX + 1];
	char kind[32];  /* test-failover, failover, commit, reprotect, failback, ... */
	char state[16]; /* running, succeeded, failed */
	int64_t started_ns, ended_ns;
	char detail[256];
};

int ferry_catalog_job_add(struct ferry_catalog *c, int64_t vm_id, const char *kind,
			  const char *state, const char *detail, int64_t *ret_id);
/* Oldest first. */
int ferry_catalog_job_list(struct ferry_catalog *c,
			   int (*cb)(const struct ferry_job *j, void *userdata), void *userdata);

/* ---- events ---- */

int ferry_catalog_event_add(struct ferry_catalog *c, int64_t vm_id, const char *level,
			    const char *message);
/* Newest last; at most limit. */
int ferry_catalog_event_list(struct ferry_catalog *c, int64_t vm_id, unsigned limit,
			     int (*cb)(int64_t time_ns, const char *level, const char *message,
				       void *userdata),
			     void *userdata);

/* A number that changes whenever any writer commits (PRAGMA data_version
 * combined with local commits): readers use it to refresh cached views. */
int ferry_catalog_generation(struct ferry_catalog *c, uint64_t *ret);

/* ---- resyncs (schema version 3) ---- */

/*
 * The VM's latest resync: the vault published its image's fingerprints and
 * the chain base the agent continues from (docs/format/cache.md, "Resync").
 * While the VM is FERRY_VM_RESYNC_REQUIRED the next segment applied must
 * be base_seq + 1 with prev base_digest; every waiting segment up to
 * base_seq belongs to the chain the resync replaced.
 */
struct ferry_vm_resync {
	int64_t vm_id;
	uint64_t epoch;              /* 1, 2, ... per VM */
	uint64_t base_seq;           /* beyond every seq of the replaced chain */
	struct ferry_id base_digest; /* random: proves the agent read the request */
	int64_t requested_ns;
	int64_t done_ns; /* when a marker of the resync applied; 0 before */
	char reason[512];
};

/* -ENOENT when the VM never had one (or a reader's catalog predates
 * version 3). */
int ferry_catalog_resync_get(struct ferry_catalog *c, int64_t vm_id, struct ferry_vm_resync *ret);
/* Inserts or replaces the VM's row. */
int ferry_catalog_resync_set(struct ferry_catalog *c, const struct ferry_vm_resync *r);
