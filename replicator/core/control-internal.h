/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pure parts of control.c, exposed for the unit tests and the fuzz
 * target: encoding and decoding of the agent lease, the resync request and
 * the resync want. No I/O here. Format: docs/format/cache.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/control.h"

/* Readers refuse longer records (before they read them). */
#define CONTROL_LEASE_MAX 4096u
#define CONTROL_WANT_MAX 4096u
#define CONTROL_REQUEST_MAX 65536u

/* Each encodes for vm into buf (size bytes): -EINVAL on an invalid name or
 * a record that breaks the format's rules, -ENOBUFS if buf is too small. */
int control_lease_format(const char *vm, const struct ferry_lease *l, void *buf, size_t size,
			 size_t *ret_len);
int control_request_format(const char *vm, const struct ferry_resync_request *q, void *buf,
			   size_t size, size_t *ret_len);
int control_want_format(const char *vm, const struct ferry_resync_want *w, void *buf, size_t size,
			size_t *ret_len);

/* Each decodes and verifies: with vm set, a record naming another VM is
 * damage. -EBADMSG on any damage, -EPROTONOSUPPORT for an unknown major
 * version under a good checksum. */
int control_lease_parse(const void *buf, size_t len, const char *vm, struct ferry_lease *ret);
int control_request_parse(const void *buf, size_t len, const char *vm,
			  struct ferry_resync_request *ret);
int control_want_parse(const void *buf, size_t len, const char *vm, struct ferry_resync_want *ret);

#define CONTROL_GROUP_MAX 4096u
int control_group_format(const struct ferry_group_record *g, void *buf, size_t size,
			 size_t *ret_len);
/* With vm set, a record naming another VM is damage. */
int control_group_parse(const void *buf, size_t len, const char *vm,
			struct ferry_group_record *ret);
