/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Control records in the cache, beside the segments: the agent lease that
 * keeps a second agent off a VM, and the resync records through which the
 * agent and the vault agree on a new start when their chains disagree. The
 * replicator publishes a resync request (epoch, the chain base the agent
 * continues from, and per disk the SHA-256 of a fingerprint blob of the
 * vault's image); the agent asks for one with a "want" when it finds its
 * own state behind the chain. Every record is small, versioned and
 * checksummed; a fingerprint blob is a complete FERRY-FP file
 * (docs/format/agent-state.md).
 *
 * Names: leases/<vm>.lease, resync/<vm>.req, resync/<vm>.want (each
 * replaced whole), resync/<vm>/<epoch, 16 hex>/<disk>.fp.
 * Format: docs/format/cache.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/cache.h"
#include "ferry/crypto.h"

#define FERRY_LEASE_ID_SIZE 16
#define FERRY_LEASE_HOST_MAX 255
#define FERRY_RESYNC_MAX_DISKS 64

struct ferry_lease {
	uint8_t id[FERRY_LEASE_ID_SIZE]; /* the holder's state identity; never all zero */
	char host[FERRY_LEASE_HOST_MAX + 1];
	uint32_t pid;
	int64_t written_ns;
	int64_t expires_ns; /* >= written_ns */
	uint64_t seq;       /* the last marker the holder's state committed */
};

/* -ENOENT when nobody ever held the VM; -EBADMSG on damage (or another
 * VM's lease); -EPROTONOSUPPORT for an unknown major version. */
int ferry_control_get_lease(struct ferry_cache *c, const char *vm, struct ferry_lease *ret);
/* With exclusive, -EEXIST if a lease is there (the first take). -EINVAL for
 * a lease that breaks the format's rules (no id, no host, expiry before
 * its writing). */
int ferry_control_put_lease(struct ferry_cache *c, const char *vm, const struct ferry_lease *l,
			    int exclusive);

struct ferry_resync_disk {
	char name[65];
	uint64_t size;       /* the vault's size of the disk; 0: unknown, no fingerprints */
	struct ferry_id sum; /* SHA-256 of its fingerprint blob; null iff size is 0 */
};

struct ferry_resync_request {
	uint64_t epoch;              /* >= 1 */
	uint64_t base_seq;           /* the agent's next segment is base_seq + 1 */
	struct ferry_id base_digest; /* ... with this prev */
	int64_t requested_ns;
	uint64_t applied_seq; /* the vault's last applied segment (informative) */
	size_t ndisks;
	struct ferry_resync_disk disks[FERRY_RESYNC_MAX_DISKS];
};

int ferry_control_get_request(struct ferry_cache *c, const char *vm,
			      struct ferry_resync_request *ret);
int ferry_control_put_request(struct ferry_cache *c, const char *vm,
			      const struct ferry_resync_request *req);
int ferry_control_delete_request(struct ferry_cache *c, const char *vm);

/* Why an agent asks for a resync. */
enum ferry_want_reason {
	FERRY_WANT_STATE_BEHIND = 1, /* its state predates the chain it shipped (restored) */
	FERRY_WANT_OTHER_AGENT = 2,  /* another agent state shipped the chain since */
	FERRY_WANT_STATE_LOST = 3,   /* no state, but the chain exists */
	FERRY_WANT_CHAIN_LOST = 4,   /* segments it shipped vanished from the cache unapplied */
	FERRY_WANT_UNUSABLE = 5,     /* the published resync could not be adopted */
};
/* A sentence for the reason; "unknown reason" for values a newer agent may use. */
const char *ferry_want_reason_text(uint8_t reason);

struct ferry_resync_want {
	uint8_t id[FERRY_LEASE_ID_SIZE]; /* the asking agent's state identity */
	int64_t written_ns;
	uint64_t seen_epoch; /* the newest request epoch the agent had seen; 0: none */
	uint8_t reason;      /* enum ferry_want_reason; 0 is damage */
};

int ferry_control_get_want(struct ferry_cache *c, const char *vm, struct ferry_resync_want *ret);
int ferry_control_put_want(struct ferry_cache *c, const char *vm,
			   const struct ferry_resync_want *w);
int ferry_control_delete_want(struct ferry_cache *c, const char *vm);

/* The fingerprint blob of a disk for a resync epoch. */
int ferry_control_put_fp(struct ferry_cache *c, const char *vm, uint64_t epoch, const char *disk,
			 const void *buf, size_t len);
int ferry_control_fp_size(struct ferry_cache *c, const char *vm, uint64_t epoch, const char *disk,
			  uint64_t *ret);
int ferry_control_get_fp_range(struct ferry_cache *c, const char *vm, uint64_t epoch,
			       const char *disk, uint64_t off, void *buf, size_t len);
/* Deletes the fingerprint blobs of every epoch other than keep (0: all). */
int ferry_control_delete_fps(struct ferry_cache *c, const char *vm, uint64_t keep);

/*
 * Consistency groups: the records through which the agents of a group's
 * VMs agree on one cut (docs/architecture.md, "Consistency groups"). Each
 * agent writes only records under its own VM's name, so no two writers
 * ever race on a name:
 *   groups/<group>/members/<vm>.member        the VM belongs to the group
 *   groups/<group>/rounds/<round, 16 hex>/<vm>.<step>
 *                                             ready, paused, abort, cut
 */
enum ferry_group_step {
	FERRY_GROUP_MEMBER = 1,
	FERRY_GROUP_READY = 2,  /* views made: can pause at once */
	FERRY_GROUP_PAUSED = 3, /* the VM is stopped since time_ns */
	FERRY_GROUP_ABORT = 4,  /* gave up this round; reason says why */
	FERRY_GROUP_CUT = 5,    /* cut at the round's instant, VM resumed */
};
#define FERRY_GROUP_REASON_MAX 255

struct ferry_group_record {
	uint8_t step;                            /* enum ferry_group_step */
	uint64_t round;                          /* 0 for MEMBER, else > 0 */
	int64_t time_ns;                         /* when written; PAUSED: when the VM stopped */
	char vm[65];                             /* the writer's VM */
	char reason[FERRY_GROUP_REASON_MAX + 1]; /* ABORT: why; else "" */
};

/* Puts rec (replacing the writer's own record of that step and round).
 * -EINVAL for an invalid group or VM name or a record that breaks the
 * rules above. */
int ferry_control_put_group(struct ferry_cache *c, const char *group,
			    const struct ferry_group_record *rec);
/* One record; -ENOENT when absent, -EBADMSG on damage (or a record whose
 * fields disagree with its name). */
int ferry_control_get_group(struct ferry_cache *c, const char *group, uint64_t round, uint8_t step,
			    const char *vm, struct ferry_group_record *ret);
/* Calls cb with the VM and step of every well-formed record name of round
 * (0: the members), in name order; other names there are skipped. The
 * records themselves are not read: a name is what a barrier polls for. */
int ferry_control_list_group(struct ferry_cache *c, const char *group, uint64_t round,
			     int (*cb)(const char *vm, uint8_t step, void *userdata),
			     void *userdata);
/* Deletes vm's own records of every round before `before`. */
int ferry_control_delete_group_rounds(struct ferry_cache *c, const char *group, const char *vm,
				      uint64_t before);
