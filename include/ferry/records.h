/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Records: the small self-describing objects that make the store the truth
 * about a vault. A VAULT record (chunk size, vault id), one VM record per
 * VM (settings, disks, target resources), a STATE record per applied
 * segment (applied seq and digest, marker, live and work roots) and a POINT
 * record per recovery point (name, time, consistency, seq, disk roots) sit
 * in packs beside the chunks and nodes they name, so `ferry attach` can
 * rebuild a catalog from the store alone. Text key=value encoding, specified
 * in docs/format/records.md; the object id (SHA-256) is the checksum.
 *
 * Encoders validate and return a malloc'd buffer; decoders accept only a
 * complete, well-formed record of the expected kind (-EBADMSG otherwise,
 * -EPROTONOSUPPORT for an unknown major version) and fill their result only
 * on success. Record structs own their disk and resource arrays: release
 * them with the matching _done function (safe on a zeroed struct).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/catalog.h"
#include "ferry/ingest.h"
#include "ferry/store.h"

#define FERRY_RECORD_MAJOR 1
/* The newest minor version this codec knows: 1.1 adds the point's
 * group-round. A record is written with the oldest minor that has every
 * key it holds (1.0 when it holds none of 1.1's). */
#define FERRY_RECORD_MINOR 1
/* Limits a decoder enforces (and an encoder refuses past). */
#define FERRY_RECORD_MAX_DISKS 256
#define FERRY_RECORD_MAX_RESOURCES 256

struct ferry_vault;

struct ferry_record_vault {
	char vault_id[65]; /* lower-case hex, as the catalog's vault_id setting */
	uint32_t chunk_size;
	int64_t created_ns;
};

struct ferry_record_resource {
	char kind[FERRY_NAME_MAX + 1];
	char value[FERRY_PATH_MAX];
};

struct ferry_record_vm {
	char name[FERRY_NAME_MAX + 1];
	int64_t created_ns; /* identifies this VM among VMs of the same name */
	int64_t written_ns; /* the newest record of a VM wins */
	char cache_url[FERRY_URL_MAX];
	int64_t crash_interval_s, app_interval_s, retention_s;
	struct ferry_disk *disks; /* idx, name, source_path */
	size_t ndisks;
	struct ferry_record_resource *resources; /* in catalog order */
	size_t nresources;
};

struct ferry_record_state {
	char vm[FERRY_NAME_MAX + 1];
	int64_t vm_created_ns;
	int state; /* enum ferry_vm_state */
	uint64_t applied_seq;
	struct ferry_id applied_digest;
	uint64_t marker_seq;
	int64_t marker_ns;
	uint64_t initial_done, initial_total;
	struct ferry_disk *disks; /* idx, name, size, live_root, work_root */
	size_t ndisks;
};

struct ferry_record_point {
	char vm[FERRY_NAME_MAX + 1];
	int64_t vm_created_ns;
	char name[40];
	int64_t time_ns;
	int consistency; /* enum ferry_consistency */
	uint64_t seq;
	struct ferry_id digest; /* of segment seq */
	uint64_t group_round;   /* 0, or its consistency group's round (1.1) */
	struct ferry_point_disk *disks;
	size_t ndisks;
};

/* Which kind a record claims to be (FERRY_OBJ_VAULT, _VM, _STATE, _POINT),
 * from its first line only. */
int ferry_record_kind(const void *buf, size_t len, enum ferry_obj_type *ret);

int ferry_record_vault_encode(const struct ferry_record_vault *r, char **ret_buf, size_t *ret_len);
int ferry_record_vault_decode(const void *buf, size_t len, struct ferry_record_vault *ret);

int ferry_record_vm_encode(const struct ferry_record_vm *r, char **ret_buf, size_t *ret_len);
int ferry_record_vm_decode(const void *buf, size_t len, struct ferry_record_vm *ret);
void ferry_record_vm_done(struct ferry_record_vm *r);

int ferry_record_state_encode(const struct ferry_record_state *r, char **ret_buf, size_t *ret_len);
int ferry_record_state_decode(const void *buf, size_t len, struct ferry_record_state *ret);
void ferry_record_state_done(struct ferry_record_state *r);

int ferry_record_point_encode(const struct ferry_record_point *r, char **ret_buf, size_t *ret_len);
int ferry_record_point_decode(const void *buf, size_t len, struct ferry_record_point *ret);
void ferry_record_point_done(struct ferry_record_point *r);

/*
 * Stores one record through an ingest of its own (ingest.h: one pack, one
 * catalog transaction; nothing is stored again if the vault has it) and
 * runs rows, if not NULL, in that transaction: the caller's rows that name
 * the record. *ret_id is set before rows runs, so rows may read it through
 * userdata. Call with no transaction open.
 */
int ferry_record_store(struct ferry_vault *v, enum ferry_obj_type type, const void *buf, size_t len,
		       struct ferry_id *ret_id, ferry_ingest_rows_t rows, void *userdata);
