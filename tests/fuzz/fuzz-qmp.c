/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the QMP client (replicator/lib/qmp.c): the input is all
 * that qemu sends on the connection, written in advance into one end of a
 * socketpair and followed by end-of-file, so no wait ever times out. Over
 * the other end the client greets, negotiates, then runs a fixed script:
 * command ids 1 (qmp_capabilities), 2 query-block, 3 an HMP command, 4 a
 * printf-built block-dirty-bitmap-add, 5.. further commands, with event
 * waits in between. Whatever the bytes, every call returns one of the
 * documented errors, the error text holds no control character, and once
 * the connection is closed every call says -ENOTCONN. Messages over 4 KiB
 * are refused here, so that the size bound is reached too.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ferry/util.h"
#include "qmp-internal.h"
#include "qmp.h"

#define MAX_MESSAGE 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error_text(const struct qmp *q, int r)
{
	const char *e = qmp_last_error(q);
	size_t len = strlen(e);
	if (len >= 1024 || (r < 0) != (len > 0))
		abort();
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)e[i] < 0x20 || e[i] == 0x7f)
			abort();
}

/* The errors a call may return once connected; closed says whether the
 * connection is gone after r. */
static void check(const struct qmp *q, int r, int *closed)
{
	check_error_text(q, r);
	if (*closed && r != -ENOTCONN && r != 0)
		abort();
	switch (r) {
	case 0:
	case -EREMOTEIO:
	case -ENOMEM:
		return;
	case -ECONNRESET:
	case -EPROTO:
	case -EMSGSIZE:
		*closed = 1;
		return;
	case -ENOTCONN:
		if (!*closed)
			abort();
		return;
	case -ETIMEDOUT:
		/* Only event waits with no time may time out: the stream
		 * ends in EOF, which no wait outlasts. */
		return;
	default:
		abort();
	}
}

static void put_result(struct json_object *o)
{
	json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	_cleanup_close_ int server = sv[1];
	/* The whole input fits in the socket buffer, or what fits is sent:
	 * the same on every run on one machine. */
	size_t done = 0;
	while (done < size) {
		ssize_t n = send(server, data + done, size - done, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	shutdown(server, SHUT_WR);

	_cleanup_(qmp_freep) struct qmp *q = NULL;
	int r = qmp_connect_fd(sv[0], 5000, MAX_MESSAGE, &q);
	if (r < 0) {
		if (r != -EPROTO && r != -ECONNRESET && r != -EMSGSIZE && r != -ENOMEM)
			abort();
		return 0;
	}

	int closed = 0;
	struct json_object *v = NULL;
	r = qmp_execute(q, "query-block", NULL, &v);
	check(q, r, &closed);
	if (r == 0)
		put_result(v);

	r = qmp_wait_event(q, "BLOCK_JOB_COMPLETED", 0, &v);
	check(q, r, &closed);
	if (r == 0) {
		struct json_object *name;
		if (!json_object_object_get_ex(v, "event", &name) ||
		    strcmp(json_object_get_string(name), "BLOCK_JOB_COMPLETED") != 0)
			abort();
		put_result(v);
	}

	char *out = NULL;
	r = qmp_hmp(q, "info block", &out);
	check(q, r, &closed);
	if (r == 0 && !out)
		abort();
	free(out);

	v = NULL;
	r = qmp_executef(q, &v, "block-dirty-bitmap-add",
			 "{\"node\": \"%s\", \"name\": \"%s\", \"granularity\": %u}", "disk0", "b0",
			 4096u);
	check(q, r, &closed);
	if (r == 0)
		put_result(v);

	/* Drain what remains: replies to commands 5.., events of any name. */
	for (int i = 0; i < 64 && !closed; i++) {
		r = qmp_wait_event(q, "JOB_STATUS_CHANGE", 0, NULL);
		check(q, r, &closed);
		r = qmp_execute(q, "query-jobs", NULL, NULL);
		check(q, r, &closed);
	}
	qmp_clear_events(q);
	r = qmp_wait_event(q, "JOB_STATUS_CHANGE", 0, NULL);
	check(q, r, &closed);
	if (closed && r != -ENOTCONN)
		abort();
	return 0;
}
