/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the cache's control records (control-internal.h): the
 * agent lease, the resync request, the resync want and the group records. Any input must be
 * refused cleanly, or decode to a record that encodes again (under any VM
 * name) and decodes to the same fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control-internal.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[CONTROL_REQUEST_MAX];

static void lease(const uint8_t *data, size_t size)
{
	struct ferry_lease a, b;
	size_t len;
	if (control_lease_parse(data, size, NULL, &a) != 0)
		return;
	if (size > CONTROL_LEASE_MAX ||
	    control_lease_format("vm1", &a, out, sizeof(out), &len) < 0 ||
	    control_lease_parse(out, len, "vm1", &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
}

static void request(const uint8_t *data, size_t size)
{
	static struct ferry_resync_request a, b;
	size_t len;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	if (control_request_parse(data, size, NULL, &a) != 0)
		return;
	if (size > CONTROL_REQUEST_MAX ||
	    control_request_format("vm1", &a, out, sizeof(out), &len) < 0 ||
	    control_request_parse(out, len, "vm1", &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
}

static void want(const uint8_t *data, size_t size)
{
	struct ferry_resync_want a, b;
	size_t len;
	if (control_want_parse(data, size, NULL, &a) != 0)
		return;
	if (size > CONTROL_WANT_MAX || control_want_format("vm1", &a, out, sizeof(out), &len) < 0 ||
	    control_want_parse(out, len, "vm1", &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
}

static void group(const uint8_t *data, size_t size)
{
	struct ferry_group_record a, b;
	size_t len;
	if (control_group_parse(data, size, NULL, &a) != 0)
		return;
	if (size > CONTROL_GROUP_MAX || control_group_format(&a, out, sizeof(out), &len) < 0 ||
	    control_group_parse(out, len, a.vm, &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lease(data, size);
	request(data, size);
	want(data, size);
	group(data, size);
	return 0;
}
