/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pure parts of the cache, exposed for the unit tests and the fuzz
 * targets: encoding and decoding of acks, agent statuses and segment names. No
 * I/O here; cache.c does the blobs calls. Format: docs/format/cache.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/cache.h"

/* An encoded ack is never longer than this (readers refuse longer ones). */
#define CACHE_ACK_MAX 4096u
/* Length of an ack this version writes for a VM name of n bytes. */
#define CACHE_ACK_LEN(n) (57u + (n) + 32u)

/* Encodes ack for vm into buf (at least CACHE_ACK_MAX bytes); -EINVAL on an
 * invalid name or an ack that breaks the seq/digest rule. */
int cache_ack_format(const char *vm, const struct ferry_ack *ack, void *buf, size_t size,
		     size_t *ret_len);
/* Decodes and verifies an ack. With vm set, an ack naming another VM is
 * damage. -EBADMSG on any damage, -EPROTONOSUPPORT for an unknown major. */
int cache_ack_parse(const void *buf, size_t len, const char *vm, struct ferry_ack *ret);

/* An encoded agent status is never longer than this. */
#define CACHE_STATUS_MAX 4096u
/* Length of a 1.0 status for a VM name of n bytes: the least any is. */
#define CACHE_STATUS_LEN(n) (106u + (n) + 32u)
/* Length of a 1.1 status for a VM name of n bytes and a message of m. */
#define CACHE_STATUS_LEN_MSG(n, m) (106u + (n) + 2u + (m) + 32u)
/* Length of a status this version (1.2) writes: name n, message m, app
 * message am bytes. */
#define CACHE_STATUS_LEN_12(n, m, am) (106u + (n) + 2u + (m) + 46u + (am) + 32u)

/* Encodes st for vm into buf; -EINVAL on an invalid name or a status that
 * breaks the format's rules, -ENOBUFS if buf is too small. */
int cache_status_format(const char *vm, const struct ferry_agent_status *st, void *buf, size_t size,
			size_t *ret_len);
/* Decodes and verifies a status. With vm set, a status naming another VM
 * is damage. -EBADMSG on any damage, -EPROTONOSUPPORT for an unknown major. */
int cache_status_parse(const void *buf, size_t len, const char *vm, struct ferry_agent_status *ret);

/* "segments/<vm>/<16 lowercase hex>.seg" into buf (at least 128 bytes). */
int cache_segment_name(const char *vm, uint64_t seq, char *buf, size_t size);
/* The seq of a well-formed segment name of vm; -EINVAL for anything else
 * (other VMs, upper-case or short hex, seq 0, extra characters). */
int cache_segment_name_parse(const char *name, const char *vm, uint64_t *ret_seq);

/* The location under the cache, for the core's other cache records
 * (control.c: leases and resyncs). */
struct ferry_blobs;
struct ferry_blobs *cache_blobs(struct ferry_cache *c);
