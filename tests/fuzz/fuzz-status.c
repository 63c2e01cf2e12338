/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the parser of the agent's status blob in the cache
 * (docs/format/cache.md). Any input must be refused cleanly or decode to a
 * status that keeps the format's rules (a message only with an error, at
 * most FERRY_STATUS_MESSAGE_MAX bytes, no NUL; the same for the app
 * message; progress within its total) and encodes back to the same bytes
 * (a 1.2 status carries nothing a reader drops; a 1.0 or 1.1 one gains
 * empty fields).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache-internal.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const struct ferry_agent_status *a, const struct ferry_agent_status *b)
{
	return a->tracker == b->tracker && a->interval_s == b->interval_s &&
	       a->written_ns == b->written_ns && a->error == b->error && a->cycle == b->cycle &&
	       a->seq == b->seq && a->marker_ns == b->marker_ns && a->started_ns == b->started_ns &&
	       a->duration_ns == b->duration_ns && a->shipped_bytes == b->shipped_bytes &&
	       a->segments == b->segments && a->read_bytes == b->read_bytes &&
	       a->source_waiting_bytes == b->source_waiting_bytes &&
	       strcmp(a->message, b->message) == 0 && a->app_error == b->app_error &&
	       a->app_attempt_ns == b->app_attempt_ns && a->app_ok_ns == b->app_ok_ns &&
	       strcmp(a->app_message, b->app_message) == 0 &&
	       a->progress_done_bytes == b->progress_done_bytes &&
	       a->progress_total_bytes == b->progress_total_bytes &&
	       a->progress_rate == b->progress_rate;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferry_agent_status a;
	if (cache_status_parse(data, size, NULL, &a) != 0)
		return 0;
	size_t m = strnlen(a.message, sizeof(a.message));
	size_t am = strnlen(a.app_message, sizeof(a.app_message));
	if (size > CACHE_STATUS_MAX || m > FERRY_STATUS_MESSAGE_MAX || (m && !a.error) ||
	    am > FERRY_STATUS_MESSAGE_MAX || (am && !a.app_error) ||
	    a.progress_done_bytes > a.progress_total_bytes)
		abort();
	/* The VM name sits at offset 106 with its length at 105. A status
	 * accepted with a name longer than a VM's, or past the end of the
	 * input, is itself a finding. */
	char vm[65];
	if (size < 106 || data[105] >= sizeof(vm) || size - 106 < data[105])
		abort();
	memcpy(vm, data + 106, data[105]);
	vm[data[105]] = 0;
	struct ferry_agent_status b;
	if (cache_status_parse(data, size, vm, &b) != 0 || !same(&a, &b))
		abort();
	/* What a reader accepts, a writer can write. */
	uint8_t out[CACHE_STATUS_MAX];
	size_t len;
	if (cache_status_format(vm, &a, out, sizeof(out), &len) < 0)
		abort();
	/* Equal unless the input was another minor (1.0 has no message
	 * field, 1.1 no app or progress fields, a later one may have extra
	 * fields). */
	if (len == size && get_le16(data + 10) == 2 && memcmp(out, data, len) != 0)
		abort();
	if (get_le16(data + 10) == 2 && len > size)
		abort();
	return 0;
}
