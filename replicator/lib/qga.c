/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest agent client (qga.h). It rides on the QMP client's JSON stream
 * (qmp-internal.h): qmp_execute() sends each command with an id and takes
 * the reply that carries it back, dropping any other; what is particular
 * to qemu-ga is the resync before the first command and after a timeout
 * (the 0xFF bytes and guest-sync-delimited), and the error texts, which
 * speak of the guest agent.
 */
#include "qga.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ferry/util.h"
#include "qmp-internal.h"
#include "qmp.h"

#define ERROR_MAX 512
#define SYNC_DELIMITER 0xff

struct qga {
	struct qmp *q;
	int timeout_ms;
	int synced; /* 0 before the first command and after a timeout */
	char error[ERROR_MAX];
};

static inline void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

__attribute__((format(printf, 3, 4))) static int fail(struct qga *g, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g->error, sizeof(g->error), fmt, ap);
	va_end(ap);
	return r;
}

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : ferry_mono_ns() + (int64_t)timeout_ms * 1000000;
}

/* What is left of deadline, in ms for the stream calls (-1: no deadline). */
static int ms_left(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - ferry_mono_ns();
	return left <= 0 ? 0 : (int)MIN(DIV_ROUND_UP(left, 1000000), (int64_t)INT32_MAX);
}

/* A sync id: random, so that a previous client's sync, answered late,
 * is never taken for ours. */
static int64_t sync_id(void)
{
	uint32_t v;
	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
		v = (uint32_t)(ferry_mono_ns() ^ ((int64_t)getpid() << 16));
	return (int64_t)(v & 0x7fffffffu) | 1;
}

/* Rephrases the stream's failure r of what (a command) for the guest
 * agent, and returns r. */
static int stream_fail(struct qga *g, int r, const char *what, int timeout_ms)
{
	switch (r) {
	case -EREMOTEIO:
		return fail(g, r, "%s", qmp_last_error(g->q));
	case -ETIMEDOUT:
		return fail(g, r,
			    "no answer to %s from the guest agent within %d ms (does qemu-ga run "
			    "in the guest?)",
			    what, timeout_ms);
	case -ECONNRESET:
		return fail(g, r, "the guest agent's socket closed during %s", what);
	case -ENOTCONN:
		return fail(g, r,
			    "not connected to the guest agent (the connection failed "
			    "earlier)");
	default:
		return fail(g, r, "%s: %s", what, qmp_last_error(g->q));
	}
}

/*
 * Resynchronises within timeout_ms: 0xFF (qemu-ga drops a partial command
 * it holds), guest-sync-delimited with a fresh id, then everything up to
 * a 0xFF and every delimited reply that is not ours are dropped.
 */
static int resync(struct qga *g, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	int64_t id = sync_id();
	char text[128];
	int n = snprintf(
		text, sizeof(text),
		"%c{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": %" PRId64 "}}\n",
		SYNC_DELIMITER, id);
	qmp_set_timeout(g->q, ms_left(deadline));
	int r = qmp_send_raw(g->q, text, (size_t)n);
	if (r < 0)
		return stream_fail(g, r, "guest-sync-delimited", timeout_ms);
	for (;;) {
		r = qmp_skip_past(g->q, SYNC_DELIMITER, ms_left(deadline));
		_cleanup_(json_putp) struct json_object *m = NULL;
		if (r >= 0)
			r = qmp_read_object(g->q, ms_left(deadline), &m);
		if (r < 0)
			return stream_fail(g, r, "guest-sync-delimited", timeout_ms);
		struct json_object *v;
		if (json_object_object_get_ex(m, "return", &v) &&
		    json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id) {
			g->synced = 1;
			return 0;
		}
	}
}

int qga_connect_fd(int fd, int timeout_ms, size_t max_message, struct qga **ret)
{
	_cleanup_(qga_freep) struct qga *g = calloc(1, sizeof(*g));
	if (!g) {
		close(fd);
		return -ENOMEM;
	}
	g->timeout_ms = timeout_ms;
	int r = qmp_open_stream(fd, timeout_ms, max_message, &g->q);
	if (r < 0)
		return r;
	/* A delimited reply may come in one read behind an earlier one. */
	qmp_set_delimiter(g->q, SYNC_DELIMITER);
	r = resync(g, timeout_ms);
	/* qemu accepts one client of a socket chardev at a time: one it has
	 * not accepted by now waits behind another. */
	if (r == -ETIMEDOUT && qmp_queued(g->q) > 0)
		return -EBUSY;
	if (r < 0)
		return r;
	*ret = TAKE_PTR(g);
	return 0;
}

int qga_connect(const char *path, int timeout_ms, struct qga **ret)
{
	/* As for QMP: a full queue is a busy agent. */
	int fd = qmp_unix_connect(path);
	if (fd < 0)
		return fd;
	return qga_connect_fd(fd, timeout_ms, QGA_MAX_MESSAGE, ret);
}

struct qga *qga_free(struct qga *g)
{
	if (!g)
		return NULL;
	qmp_free(g->q);
	free(g);
	return NULL;
}

int qga_execute(struct qga *g, const char *command, struct json_object *args, int timeout_ms,
		struct json_object **ret)
{
	_cleanup_(json_putp) struct json_object *a = args;
	g->error[0] = 0;
	int t = timeout_ms < 0 ? g->timeout_ms : timeout_ms;
	int64_t deadline = deadline_after(t);
	int r;
	if (!g->synced) {
		r = resync(g, t);
		if (r < 0)
			return r;
	}
	qmp_set_timeout(g->q, ms_left(deadline));
	r = qmp_execute(g->q, command, TAKE_PTR(a), ret);
	if (r == -ETIMEDOUT)
		g->synced = 0;
	if (r < 0)
		return stream_fail(g, r, command, t);
	return 0;
}

int qga_ping(struct qga *g, int timeout_ms)
{
	return qga_execute(g, "guest-ping", NULL, timeout_ms, NULL);
}

/* A command whose answer is a count of file systems. */
static int count_command(struct qga *g, const char *command, int timeout_ms, int *ret_count)
{
	_cleanup_(json_putp) struct json_object *v = NULL;
	int r = qga_execute(g, command, NULL, timeout_ms, &v);
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
	    json_object_get_int64(v) > INT32_MAX)
		return fail(g, -EPROTO, "the guest agent answered %s with no count", command);
	if (ret_count)
		*ret_count = (int)json_object_get_int64(v);
	return 0;
}

int qga_freeze(struct qga *g, int timeout_ms, int *ret_count)
{
	return count_command(g, "guest-fsfreeze-freeze", timeout_ms, ret_count);
}

int qga_thaw(struct qga *g, int timeout_ms, int *ret_count)
{
	return count_command(g, "guest-fsfreeze-thaw", timeout_ms, ret_count);
}

int qga_frozen(struct qga *g, int timeout_ms, int *ret_frozen)
{
	_cleanup_(json_putp) struct json_object *v = NULL;
	int r = qga_execute(g, "guest-fsfreeze-status", NULL, timeout_ms, &v);
	if (r < 0)
		return r;
	const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
	if (strcmp(s, "frozen") != 0 && strcmp(s, "thawed") != 0)
		return fail(g, -EPROTO,
			    "the guest agent's fsfreeze status is neither frozen nor "
			    "thawed");
	*ret_frozen = s[0] == 'f';
	return 0;
}

const char *qga_last_error(const struct qga *g)
{
	return g->error;
}
