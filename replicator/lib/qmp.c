/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client. Bytes from qemu go through one json-c tokener in stream
 * mode (strict JSON, UTF-8 checked, bounded depth): read_message() feeds it
 * what has arrived and cuts the stream into messages, whatever their line
 * breaks, refusing any over the size bound; for the guest agent a
 * delimiter byte (qmp_set_delimiter) cuts the stream before the tokener
 * sees it. A message is an event (remembered), the reply to the command in
 * flight (matched by its id), or anything else (a late reply to a command
 * whose caller timed out: dropped).
 * A failure that leaves the stream out of step (reset, malformed JSON, an
 * oversize message, a half-sent command) closes the connection for good;
 * the caller connects again.
 */
#include "qmp.h"
#include "qmp-internal.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "ferry/util.h"

/* qemu nests a backing chain's image information one level per image. */
#define JSON_DEPTH 256
#define ERROR_MAX 1024
#define INBUF_SIZE 65536

struct qmp {
	int fd; /* -1 once the connection is closed */
	int timeout_ms;
	size_t max_message;
	struct json_tokener *tok;
	size_t msg_bytes; /* fed to tok since its last message */
	int delim;        /* a byte that is no JSON but cuts the stream, or -1 */
	size_t in_start, in_end;
	int64_t next_id;
	struct json_object *events[QMP_EVENTS_KEPT]; /* oldest first */
	size_t nevents;
	size_t error_len;
	bool error_cut;
	char error[ERROR_MAX];
	char inbuf[INBUF_SIZE];
};

enum kind {
	MSG_EVENT,
	MSG_REPLY, /* the reply to the command in flight */
	MSG_OTHER,
};

static inline void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

/* ---- errors ---- */

static void error_clear(struct qmp *q)
{
	q->error[0] = 0;
	q->error_len = 0;
	q->error_cut = false;
}

static bool utf8_continuation(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/* Appends len bytes of s to the error text, control characters escaped, as
 * far as they fit; a cut falls between UTF-8 characters and shows as "...". */
static void error_append(struct qmp *q, const char *s, size_t len)
{
	for (size_t i = 0; i < len && !q->error_cut; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		size_t n = 1;
		if (c < 0x20 || c == 0x7f)
			n = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", c);
		else
			esc[0] = (char)c;
		if (q->error_len + n + sizeof("...") > sizeof(q->error)) {
			if (utf8_continuation(c)) {
				while (q->error_len > 0 &&
				       utf8_continuation((unsigned char)q->error[q->error_len - 1]))
					q->error_len--;
				if (q->error_len > 0 &&
				    (unsigned char)q->error[q->error_len - 1] >= 0xc0)
					q->error_len--;
			}
			memcpy(q->error + q->error_len, "...", 3);
			q->error_len += 3;
			q->error_cut = true;
			break;
		}
		memcpy(q->error + q->error_len, esc, n);
		q->error_len += n;
	}
	q->error[q->error_len] = 0;
}

static void error_append_str(struct qmp *q, const char *s)
{
	error_append(q, s, strlen(s));
}

__attribute__((format(printf, 3, 0))) static int vfail(struct qmp *q, int r, const char *fmt,
						       va_list ap)
{
	char buf[ERROR_MAX];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	error_clear(q);
	if (n > 0)
		error_append(q, buf, MIN((size_t)n, sizeof(buf) - 1));
	return r;
}

/* Sets the error text and returns r. */
__attribute__((format(printf, 3, 4))) static int fail(struct qmp *q, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	r = vfail(q, r, fmt, ap);
	va_end(ap);
	return r;
}

/* fail(), and the connection closes: the stream is out of step. */
__attribute__((format(printf, 3, 4))) static int fail_closed(struct qmp *q, int r, const char *fmt,
							     ...)
{
	closep(&q->fd);
	q->fd = -1;
	va_list ap;
	va_start(ap, fmt);
	r = vfail(q, r, fmt, ap);
	va_end(ap);
	return r;
}

/* ---- bytes ---- */

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : ferry_mono_ns() + (int64_t)timeout_ms * 1000000;
}

/* Waits for events on fd until deadline (-1: forever); polls at least once. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int ms = -1;
		if (deadline >= 0) {
			int64_t left = deadline - ferry_mono_ns();
			ms = left <= 0 ? 0 :
					 (int)MIN(DIV_ROUND_UP(left, 1000000), (int64_t)INT_MAX);
		}
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int send_all(struct qmp *q, const char *buf, size_t len, int64_t deadline)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(q->fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0) {
			done += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			int r = wait_fd(q->fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		return errno == EPIPE ? -ECONNRESET : -errno;
	}
	return 0;
}

/* Reads what qemu sent into the (empty) input buffer. */
static int fill(struct qmp *q, int64_t deadline)
{
	int r = wait_fd(q->fd, POLLIN, deadline);
	if (r == -ETIMEDOUT)
		return r;
	if (r < 0)
		return fail_closed(q, r, "cannot wait for qemu: %s", strerror(-r));
	ssize_t n = recv(q->fd, q->inbuf, sizeof(q->inbuf), MSG_DONTWAIT);
	if (n > 0) {
		q->in_start = 0;
		q->in_end = (size_t)n;
		return 0;
	}
	if (n == 0)
		return fail_closed(q, -ECONNRESET, "qemu closed the connection");
	int e = errno;
	if (e == EINTR || e == EAGAIN)
		return 0;
	return fail_closed(q, -e, "cannot read from qemu: %s", strerror(e));
}

/* The next message from qemu, a JSON object. -ETIMEDOUT leaves the error
 * text to the caller; every other error closes the connection. */
static int read_message(struct qmp *q, int64_t deadline, struct json_object **ret)
{
	for (;;) {
		if (q->in_start == q->in_end) {
			int r = fill(q, deadline);
			if (r < 0)
				return r;
			continue;
		}
		size_t avail = q->in_end - q->in_start;
		if (q->delim >= 0) {
			/* The tokener never sees the delimiter: it is no UTF-8
			 * (json-c would fail on it even behind a complete
			 * message), and it drops whatever message it cuts. */
			const char *p = memchr(q->inbuf + q->in_start, q->delim, avail);
			if (p == q->inbuf + q->in_start) {
				json_tokener_reset(q->tok);
				q->msg_bytes = 0;
				q->in_start++;
				continue;
			}
			if (p)
				avail = (size_t)(p - (q->inbuf + q->in_start));
		}
		struct json_object *o =
			json_tokener_parse_ex(q->tok, q->inbuf + q->in_start, (int)avail);
		enum json_tokener_error jerr = json_tokener_get_error(q->tok);
		size_t used = MIN(json_tokener_get_parse_end(q->tok), avail);
		q->in_start += used;
		q->msg_bytes += used;
		if (jerr == json_tokener_continue) {
			if (q->msg_bytes > q->max_message)
				return fail_closed(q, -EMSGSIZE,
						   "a message from qemu exceeds %zu bytes",
						   q->max_message);
			if (used == 0)
				return fail_closed(q, -EPROTO,
						   "the JSON stream from qemu is stuck");
			continue;
		}
		size_t size = q->msg_bytes;
		json_tokener_reset(q->tok);
		q->msg_bytes = 0;
		if (jerr != json_tokener_success) {
			json_object_put(o);
			return fail_closed(q, -EPROTO, "qemu sent malformed JSON: %s",
					   json_tokener_error_desc(jerr));
		}
		if (size > q->max_message) {
			json_object_put(o);
			return fail_closed(q, -EMSGSIZE, "a message from qemu exceeds %zu bytes",
					   q->max_message);
		}
		if (!json_object_is_type(o, json_type_object)) {
			const char *type = json_type_to_name(json_object_get_type(o));
			json_object_put(o);
			return fail_closed(q, -EPROTO, "qemu sent a JSON %s, not an object",
					   type ? type : "value");
		}
		*ret = o;
		return 0;
	}
}

/* ---- messages ---- */

static enum kind classify(struct json_object *m, int64_t id)
{
	struct json_object *v;
	if (json_object_object_get_ex(m, "event", &v))
		return json_object_is_type(v, json_type_string) ? MSG_EVENT : MSG_OTHER;
	bool error = json_object_object_get_ex(m, "error", NULL);
	if (!error && !json_object_object_get_ex(m, "return", NULL))
		return MSG_OTHER;
	/* qemu answers a command it could not even parse with an error
	 * without id; we send no such command, so it is ours. */
	if (!json_object_object_get_ex(m, "id", &v))
		return error ? MSG_REPLY : MSG_OTHER;
	return json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id ? MSG_REPLY :
											 MSG_OTHER;
}

static const char *event_name(struct json_object *ev)
{
	struct json_object *v = NULL;
	json_object_object_get_ex(ev, "event", &v);
	return json_object_get_string(v);
}

static void remember(struct qmp *q, struct json_object *ev)
{
	if (q->nevents == QMP_EVENTS_KEPT) {
		json_object_put(q->events[0]);
		memmove(q->events, q->events + 1, (QMP_EVENTS_KEPT - 1) * sizeof(q->events[0]));
		q->nevents--;
	}
	q->events[q->nevents++] = ev;
}

static void error_append_json(struct qmp *q, struct json_object *s, const char *fallback)
{
	if (json_object_is_type(s, json_type_string))
		error_append(q, json_object_get_string(s), (size_t)json_object_get_string_len(s));
	else
		error_append_str(q, fallback);
}

static int take_reply(struct qmp *q, struct json_object *m, struct json_object **ret)
{
	struct json_object *v = NULL;
	if (json_object_object_get_ex(m, "error", &v)) {
		struct json_object *cls = NULL, *desc = NULL;
		json_object_object_get_ex(v, "class", &cls);
		json_object_object_get_ex(v, "desc", &desc);
		error_clear(q);
		error_append_json(q, cls, "Error");
		error_append_str(q, ": ");
		error_append_json(q, desc, "(no description)");
		return -EREMOTEIO;
	}
	json_object_object_get_ex(m, "return", &v);
	if (ret)
		*ret = json_object_get(v);
	return 0;
}

static int add(struct json_object *o, const char *key, struct json_object *v)
{
	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int execute_until(struct qmp *q, const char *command, struct json_object *args,
			 int64_t deadline, struct json_object **ret)
{
	_cleanup_(json_putp) struct json_object *a = args;
	error_clear(q);
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected to qemu (the connection failed earlier)");
	if (a && !json_object_is_type(a, json_type_object))
		return fail(q, -EINVAL, "the arguments of '%s' are not a JSON object", command);

	int64_t id = q->next_id++;
	_cleanup_(json_putp) struct json_object *cmd = json_object_new_object();
	if (!cmd || add(cmd, "execute", json_object_new_string(command)) < 0 ||
	    (a && add(cmd, "arguments", TAKE_PTR(a)) < 0) ||
	    add(cmd, "id", json_object_new_int64(id)) < 0)
		return fail(q, -ENOMEM, "out of memory");
	size_t len;
	const char *text = json_object_to_json_string_length(
		cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (!text)
		return fail(q, -ENOMEM, "out of memory");
	int r = send_all(q, text, len, deadline);
	if (r == -ETIMEDOUT)
		return fail_closed(q, r, "qemu takes no command: '%s' not sent within %d ms",
				   command, q->timeout_ms);
	if (r < 0)
		return fail_closed(q, r, "cannot send '%s' to qemu: %s", command, strerror(-r));

	for (;;) {
		_cleanup_(json_putp) struct json_object *m = NULL;
		r = read_message(q, deadline, &m);
		if (r == -ETIMEDOUT)
			return fail(q, r, "no reply to '%s' within %d ms", command, q->timeout_ms);
		if (r < 0)
			return r;
		switch (classify(m, id)) {
		case MSG_EVENT:
			remember(q, TAKE_PTR(m));
			break;
		case MSG_REPLY:
			return take_reply(q, m, ret);
		case MSG_OTHER:
			break;
		}
	}
}

/* ---- connecting ---- */

/* Whether the sock_diag message h describes a listener with a pending
 * connection from the socket of inode ino. */
static bool lists_pending(const struct nlmsghdr *h, uint32_t ino)
{
	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
		return false;
	const struct rtattr *a = (const struct rtattr *)((const char *)NLMSG_DATA(h) +
							 NLMSG_ALIGN(sizeof(struct unix_diag_msg)));
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(struct unix_diag_msg)));
	for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type != UNIX_DIAG_ICONS)
			continue;
		const char *p = RTA_DATA(a);
		for (size_t i = 0; i + 4 <= RTA_PAYLOAD(a); i += 4) {
			uint32_t v;
			memcpy(&v, p + i, 4);
			if (v == ino)
				return true;
		}
	}
	return false;
}

/*
 * Whether the unix socket fd still waits in the accept queue of a listener:
 * sock_diag lists, for each listening unix socket, the inodes of the client
 * sockets of its pending connections. 1 yes, 0 no, -errno when the kernel
 * cannot tell.
 */
static int still_queued(int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	uint32_t ino = (uint32_t)st.st_ino;
	_cleanup_close_ int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -errno;
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} msg = {
		.nlh = { .nlmsg_len = sizeof(msg),
			 .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			 .nlmsg_seq = 1 },
		.req = { .sdiag_family = AF_UNIX,
			 .udiag_states = 1u << TCP_LISTEN,
			 .udiag_show = UDIAG_SHOW_ICONS },
	};
	if (send(nl, &msg, sizeof(msg), 0) < 0)
		return -errno;
	for (;;) {
		union {
			struct nlmsghdr h;
			char bytes[32768];
		} buf;
		ssize_t n = recv(nl, &buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		/* NLMSG_OK and NLMSG_NEXT compare signed with unsigned: walk
		 * the messages by hand. */
		for (size_t off = 0; off + sizeof(struct nlmsghdr) <= (size_t)n;) {
			const struct nlmsghdr *h = (const struct nlmsghdr *)(buf.bytes + off);
			if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > (size_t)n - off)
				return -EIO;
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)) || e->error >= 0)
					return -EIO;
				return e->error;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && lists_pending(h, ino))
				return 1;
			off += NLMSG_ALIGN(h->nlmsg_len);
		}
	}
}

int qmp_open_stream(int fd, int timeout_ms, size_t max_message, struct qmp **ret)
{
	_cleanup_close_ int sock = fd;
	_cleanup_(qmp_freep) struct qmp *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = TAKE_FD(sock);
	q->timeout_ms = timeout_ms;
	q->max_message = max_message;
	q->next_id = 1;
	q->delim = -1;
	q->tok = json_tokener_new_ex(JSON_DEPTH);
	if (!q->tok)
		return -ENOMEM;
	json_tokener_set_flags(q->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
					       JSON_TOKENER_VALIDATE_UTF8);
	*ret = TAKE_PTR(q);
	return 0;
}

int qmp_connect_fd(int fd, int timeout_ms, size_t max_message, struct qmp **ret)
{
	_cleanup_(qmp_freep) struct qmp *q = NULL;
	int r = qmp_open_stream(fd, timeout_ms, max_message, &q);
	if (r < 0)
		return r;

	int64_t deadline = deadline_after(timeout_ms);
	_cleanup_(json_putp) struct json_object *greeting = NULL;
	r = read_message(q, deadline, &greeting);
	/* qemu greets a client as soon as it accepts it: one it has not
	 * accepted by now waits behind the client it serves. */
	if (r == -ETIMEDOUT && still_queued(q->fd) > 0)
		return -EBUSY;
	if (r < 0)
		return r;
	struct json_object *v;
	if (!json_object_object_get_ex(greeting, "QMP", &v) ||
	    !json_object_is_type(v, json_type_object))
		return -EPROTO;
	r = execute_until(q, "qmp_capabilities", NULL, deadline, NULL);
	if (r == -EREMOTEIO)
		return -EPROTO;
	if (r < 0)
		return r;
	*ret = TAKE_PTR(q);
	return 0;
}

int qmp_unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	if (len == 0)
		return -EINVAL;
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A unix socket connects at once or not at all; EAGAIN means the
	 * listener's queue is full (qemu's holds one, and Linux lets one more
	 * in): clients wait there behind the one the monitor serves. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return errno == EAGAIN ? -EBUSY : -errno;
	return TAKE_FD(fd);
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **ret)
{
	int fd = qmp_unix_connect(path);
	if (fd < 0)
		return fd;
	return qmp_connect_fd(fd, timeout_ms, QMP_MAX_MESSAGE, ret);
}

struct qmp *qmp_free(struct qmp *q)
{
	if (!q)
		return NULL;
	closep(&q->fd);
	if (q->tok)
		json_tokener_free(q->tok);
	qmp_clear_events(q);
	free(q);
	return NULL;
}

/* ---- commands and events ---- */

int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		struct json_object **ret)
{
	return execute_until(q, command, args, deadline_after(q->timeout_ms), ret);
}

int qmp_executef(struct qmp *q, struct json_object **ret, const char *command, const char *args_fmt,
		 ...)
{
	if (!args_fmt)
		return qmp_execute(q, command, NULL, ret);
	_cleanup_free_ char *text = NULL;
	va_list ap;
	va_start(ap, args_fmt);
	int n = vasprintf(&text, args_fmt, ap);
	va_end(ap);
	if (n < 0)
		return fail(q, -ENOMEM, "out of memory");

	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return fail(q, -ENOMEM, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	struct json_object *args = json_tokener_parse_ex(tok, text, n);
	bool whole = json_tokener_get_error(tok) == json_tokener_success &&
		     json_tokener_get_parse_end(tok) == (size_t)n;
	json_tokener_free(tok);
	if (!whole || !json_object_is_type(args, json_type_object)) {
		json_object_put(args);
		return fail(q, -EINVAL, "the arguments of '%s' are not a JSON object: %s", command,
			    text);
	}
	return qmp_execute(q, command, args, ret);
}

int qmp_hmp(struct qmp *q, const char *command_line, char **ret_output)
{
	_cleanup_(json_putp) struct json_object *args = json_object_new_object();
	if (!args || add(args, "command-line", json_object_new_string(command_line)) < 0)
		return fail(q, -ENOMEM, "out of memory");
	_cleanup_(json_putp) struct json_object *out = NULL;
	int r = qmp_execute(q, "human-monitor-command", TAKE_PTR(args), &out);
	if (r < 0)
		return r;
	if (!json_object_is_type(out, json_type_string))
		return fail_closed(q, -EPROTO, "the reply to human-monitor-command is no string");
	if (ret_output) {
		char *s = strdup(json_object_get_string(out));
		if (!s)
			return fail(q, -ENOMEM, "out of memory");
		*ret_output = s;
	}
	return 0;
}

int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, struct json_object **ret)
{
	error_clear(q);
	for (size_t i = 0; i < q->nevents; i++) {
		struct json_object *ev = q->events[i];
		if (strcmp(event_name(ev), name) != 0)
			continue;
		memmove(q->events + i, q->events + i + 1,
			(q->nevents - i - 1) * sizeof(q->events[0]));
		q->nevents--;
		if (ret)
			*ret = ev;
		else
			json_object_put(ev);
		return 0;
	}
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected to qemu (the connection failed earlier)");

	int64_t deadline = deadline_after(timeout_ms);
	for (;;) {
		_cleanup_(json_putp) struct json_object *m = NULL;
		int r = read_message(q, deadline, &m);
		if (r == -ETIMEDOUT)
			return fail(q, r, "no %s event within %d ms", name, timeout_ms);
		if (r < 0)
			return r;
		/* No command is in flight: any reply is a late one. */
		if (classify(m, 0) != MSG_EVENT)
			continue;
		if (strcmp(event_name(m), name) == 0) {
			if (ret)
				*ret = TAKE_PTR(m);
			return 0;
		}
		remember(q, TAKE_PTR(m));
	}
}

/* ---- the bare stream (qmp-internal.h) ---- */

void qmp_set_timeout(struct qmp *q, int timeout_ms)
{
	q->timeout_ms = timeout_ms;
}

int qmp_send_raw(struct qmp *q, const void *buf, size_t len)
{
	error_clear(q);
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected (the connection failed earlier)");
	int r = send_all(q, buf, len, deadline_after(q->timeout_ms));
	if (r < 0)
		return fail_closed(q, r, "cannot send: %s", strerror(-r));
	return 0;
}

void qmp_set_delimiter(struct qmp *q, unsigned char delim)
{
	q->delim = delim;
}

int qmp_skip_past(struct qmp *q, unsigned char delim, int timeout_ms)
{
	error_clear(q);
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected (the connection failed earlier)");
	/* What the parser holds of a message is dropped with the rest. */
	json_tokener_reset(q->tok);
	q->msg_bytes = 0;
	int64_t deadline = deadline_after(timeout_ms);
	for (;;) {
		const char *p = memchr(q->inbuf + q->in_start, delim, q->in_end - q->in_start);
		if (p) {
			q->in_start = (size_t)(p - q->inbuf) + 1;
			return 0;
		}
		q->in_start = q->in_end;
		int r = fill(q, deadline);
		if (r == -ETIMEDOUT)
			return fail(q, r, "no byte 0x%02x within %d ms", delim, timeout_ms);
		if (r < 0)
			return r;
	}
}

int qmp_read_object(struct qmp *q, int timeout_ms, struct json_object **ret)
{
	error_clear(q);
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected (the connection failed earlier)");
	int r = read_message(q, deadline_after(timeout_ms), ret);
	if (r == -ETIMEDOUT)
		return fail(q, r, "no message within %d ms", timeout_ms);
	return r;
}

int qmp_queued(const struct qmp *q)
{
	return q->fd < 0 ? 0 : still_queued(q->fd);
}

void qmp_clear_events(struct qmp *q)
{
	for (size_t i = 0; i < q->nevents; i++)
		json_object_put(q->events[i]);
	q->nevents = 0;
}

const char *qmp_last_error(const struct qmp *q)
{
	return q->error;
}

int qmp_fd(const struct qmp *q)
{
	return q->fd;
}
