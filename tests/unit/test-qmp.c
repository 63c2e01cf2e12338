/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client, first against a scripted peer (the other end of a
 * socketpair, written in advance): greeting and capability failures, a
 * timed-out command whose late reply must not be taken for the next one's,
 * a reply split across calls, a pretty-printed one, error text escaping,
 * the event ring, oversize and non-object messages, end of file. Then
 * against a real qemu-storage-daemon on a temp image: block nodes, a dirty
 * bitmap added, seen and removed, errors from qemu, job events, what a
 * second and a third client of the single-client monitor get, and the
 * reset when the daemon is killed. HMP runs on qemu-system-x86_64 -M none
 * (the storage daemon has none). The qemu parts are skipped when the
 * programs are not installed.
 */
#include "qmp-internal.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

#define GREETING                                                                          \
	"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, " \
	"\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define CAPS_OK "{\"return\": {}, \"id\": 1}\r\n"

static inline void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

/* For one TAP line: HMP output ends in "\r\n". */
static char *chomp(char *s)
{
	size_t n = s ? strlen(s) : 0;
	while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = 0;
	return s;
}

static void skip(const char *why)
{
	printf("ok %d # SKIP %s\n", ++tap_n, why);
}

static int64_t ms_since(int64_t t0)
{
	return (ferry_mono_ns() - t0) / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static void put(int fd, const char *s)
{
	size_t len = strlen(s);
	if (write(fd, s, len) != (ssize_t)len)
		abort();
}

/* A client over a socketpair whose other end (*server) has already sent
 * the greeting, the capabilities reply and script. */
static int fake(const char *script, int timeout_ms, size_t max, int *server, struct qmp **ret)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	*server = sv[1];
	put(sv[1], script);
	return qmp_connect_fd(sv[0], timeout_ms, max, ret);
}

static int get_int(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_int(v) : -1;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void test_connect_failures(void)
{
	struct qmp *q = NULL;
	int server;
	int64_t t0 = ferry_mono_ns();
	int r = fake("", 200, QMP_MAX_MESSAGE, &server, &q);
	ok(r == -ETIMEDOUT, "no greeting from an accepted connection: -ETIMEDOUT (%d)", r);
	ok(ms_since(t0) >= 190, "after the timeout (%lld ms)", (long long)ms_since(t0));
	close(server);

	r = fake("hello\r\n", 1000, QMP_MAX_MESSAGE, &server, &q);
	ok(r == -EPROTO, "a greeting that is no JSON: -EPROTO (%d)", r);
	close(server);
	r = fake("{\"hello\": 1}\r\n", 1000, QMP_MAX_MESSAGE, &server, &q);
	ok(r == -EPROTO, "a JSON object that is no greeting: -EPROTO (%d)", r);
	close(server);
	r = fake(GREETING "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 1}",
		 1000, QMP_MAX_MESSAGE, &server, &q);
	ok(r == -EPROTO, "capabilities refused: -EPROTO (%d)", r);
	close(server);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	close(sv[1]);
	r = qmp_connect_fd(sv[0], 1000, QMP_MAX_MESSAGE, &q);
	ok(r == -ECONNRESET, "a peer that hangs up at once: -ECONNRESET (%d)", r);

	r = qmp_connect("/nonexistent/ferry-qmp.sock", 1000, &q);
	ok(r == -ENOENT, "nobody at the path: -ENOENT (%d)", r);
	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = 0;
	r = qmp_connect(longpath, 1000, &q);
	ok(r == -ENAMETOOLONG, "a path too long for a socket: -ENAMETOOLONG (%d)", r);
}

static void test_scripted(void)
{
	_cleanup_(qmp_freep) struct qmp *q = NULL;
	_cleanup_close_ int server = -1;
	int r = fake(GREETING CAPS_OK, 200, QMP_MAX_MESSAGE, &server, &q);
	ok_r(r, "connect to a scripted peer");
	if (r < 0)
		return;
	ok(strcmp(qmp_last_error(q), "") == 0, "no error after success");

	/* id 2 times out; its reply comes late, before id 3's. */
	int64_t t0 = ferry_mono_ns();
	r = qmp_execute(q, "query-version", NULL, NULL);
	ok(r == -ETIMEDOUT, "no reply: -ETIMEDOUT (%d)", r);
	ok(ms_since(t0) >= 190 && ms_since(t0) < 2000, "after the timeout (%lld ms)",
	   (long long)ms_since(t0));
	ok(strstr(qmp_last_error(q), "query-version") != NULL, "the error names the command: %s",
	   qmp_last_error(q));
	put(server, "{\"return\": {\"late\": 1}, \"id\": 2}\r\n"
		    "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"X\", "
		    "\"data\": {\"n\": 1}}\r\n"
		    "{\"return\": {\"ok\": 3}, \"id\": 3}\r\n");
	_cleanup_(json_putp) struct json_object *v = NULL;
	r = qmp_execute(q, "query-status", NULL, &v);
	ok_r(r, "the connection survives a timeout");
	ok(get_int(v, "ok") == 3 && get_int(v, "late") == -1,
	   "the late reply to the timed-out command is dropped");
	json_object_put(TAKE_PTR(v));
	ok(strcmp(qmp_last_error(q), "") == 0, "the error is cleared by a success");

	_cleanup_(json_putp) struct json_object *ev = NULL;
	r = qmp_wait_event(q, "X", 0, &ev);
	ok_r(r, "the event that came between is remembered");
	ok(r == 0 && strcmp(get_str(ev, "event"), "X") == 0, "and returned whole");
	json_object_put(TAKE_PTR(ev));
	r = qmp_wait_event(q, "X", 0, NULL);
	ok(r == -ETIMEDOUT, "an event is returned once (%d)", r);

	/* id 4's reply is split: its first half comes before the timeout. */
	put(server, "{\"return\": {\"a\"");
	r = qmp_execute(q, "query-a", NULL, NULL);
	ok(r == -ETIMEDOUT, "half a reply: -ETIMEDOUT (%d)", r);
	put(server, ": 1}, \"id\": 4}\r\n{\"return\": {\"b\": 2}, \"id\": 5}\r\n");
	r = qmp_execute(q, "query-b", NULL, &v);
	ok(r == 0 && get_int(v, "b") == 2, "the rest of it is parsed and dropped");
	json_object_put(TAKE_PTR(v));

	put(server, "{\n    \"return\": {\n        \"c\": 3\n    },\n    \"id\": 6\n}\n");
	r = qmp_execute(q, "query-c", json_object_new_object(), &v);
	ok(r == 0 && get_int(v, "c") == 3, "a pretty-printed reply");
	json_object_put(TAKE_PTR(v));

	put(server, "{\"id\": 7, \"error\": {\"class\": \"GenericError\", \"desc\": "
		    "\"Bitmap 'b\\u0001\\n' not found\"}}\r\n");
	r = qmp_executef(q, NULL, "block-dirty-bitmap-remove",
			 "{\"node\": \"%s\", \"name\": \"%s\"}", "disk0", "b");
	ok(r == -EREMOTEIO, "an error reply: -EREMOTEIO (%d)", r);
	ok(strcmp(qmp_last_error(q), "GenericError: Bitmap 'b\\x01\\x0a' not found") == 0,
	   "class and description, control characters escaped: %s", qmp_last_error(q));

	put(server,
	    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n");
	r = qmp_execute(q, "query-d", NULL, NULL);
	ok(r == -EREMOTEIO, "an error without id is the command's (%d)", r);

	r = qmp_executef(q, NULL, "query-e", "{\"node\": %s}", "unquoted");
	ok(r == -EINVAL, "arguments that are no JSON object: -EINVAL (%d)", r);
	r = qmp_execute(q, "query-e", json_object_new_array(), NULL);
	ok(r == -EINVAL, "arguments that are an array: -EINVAL (%d)", r);

	/* The -EINVAL calls sent nothing and used no id: this is id 9. */
	char buf[8192];
	size_t len = 0;
	for (int i = 0; i < QMP_EVENTS_KEPT + 4; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
					"{\"event\": \"E\", \"data\": {\"n\": %d}, "
					"\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\r\n",
					i);
	snprintf(buf + len, sizeof(buf) - len, "{\"return\": {}, \"id\": 9}\r\n");
	put(server, buf);
	r = qmp_execute(q, "query-f", NULL, NULL);
	ok_r(r, "a reply after many events");
	int n = 0, first = -1;
	while (qmp_wait_event(q, "E", 0, &ev) == 0) {
		struct json_object *data;
		if (n++ == 0 && json_object_object_get_ex(ev, "data", &data))
			first = get_int(data, "n");
		json_object_put(TAKE_PTR(ev));
	}
	ok(n == QMP_EVENTS_KEPT && first == 4, "the last %d events are kept (%d, from #%d)",
	   QMP_EVENTS_KEPT, n, first);

	put(server, "{\"event\": \"F\", \"data\": {}}\r\n{\"return\": {}, \"id\": 10}\r\n");
	r = qmp_execute(q, "query-g", NULL, NULL);
	ok_r(r, "a reply after an event");
	qmp_clear_events(q);
	r = qmp_wait_event(q, "F", 0, NULL);
	ok(r == -ETIMEDOUT, "qmp_clear_events forgets them (%d)", r);

	put(server, "[1, 2]\r\n");
	r = qmp_execute(q, "query-h", NULL, NULL);
	ok(r == -EPROTO, "a message that is no object: -EPROTO (%d)", r);
	r = qmp_execute(q, "query-i", NULL, NULL);
	ok(r == -ENOTCONN, "then the connection is closed: -ENOTCONN (%d)", r);
	q = qmp_free(q);

	_cleanup_close_ int server2 = -1;
	r = fake(GREETING CAPS_OK, 1000, 1024, &server2, &q);
	ok_r(r, "connect with a 1 KiB bound");
	if (r == 0) {
		char big[2100];
		int m = snprintf(big, sizeof(big), "{\"return\": \"");
		memset(big + m, 'x', 2000);
		snprintf(big + m + 2000, sizeof(big) - (size_t)m - 2000, "\", \"id\": 2}\r\n");
		put(server2, big);
		r = qmp_execute(q, "query-big", NULL, NULL);
		ok(r == -EMSGSIZE, "a reply over the bound: -EMSGSIZE (%d)", r);
		r = qmp_execute(q, "query-j", NULL, NULL);
		ok(r == -ENOTCONN, "then -ENOTCONN (%d)", r);
		q = qmp_free(q);
	}

	_cleanup_close_ int server3 = -1;
	r = fake(GREETING CAPS_OK "{\"return\": ", 1000, QMP_MAX_MESSAGE, &server3, &q);
	ok_r(r, "connect to a peer that will hang up");
	if (r == 0) {
		shutdown(server3, SHUT_WR);
		r = qmp_execute(q, "query-k", NULL, NULL);
		ok(r == -ECONNRESET, "the peer hangs up in a reply: -ECONNRESET (%d)", r);
		r = qmp_wait_event(q, "X", 1000, NULL);
		ok(r == -ENOTCONN, "then -ENOTCONN (%d)", r);
	}
}

/* ---- a real qemu ---- */

static bool have_program(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	_cleanup_free_ char *copy = strdup(path);
	char *save = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/%s", dir, name) < 0)
			abort();
		if (access(p, X_OK) == 0)
			return true;
	}
	return false;
}

static pid_t spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* Connects, waiting for the socket to appear and for the monitor to be
 * free (it accepts the clients queued before us one by one). */
static int connect_retry(const char *path, pid_t pid, struct qmp **ret)
{
	int64_t t0 = ferry_mono_ns();
	for (;;) {
		int r = qmp_connect(path, 2000, ret);
		if (r == 0 || (r != -ENOENT && r != -ECONNREFUSED && r != -EBUSY) ||
		    ms_since(t0) > 15000)
			return r;
		if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
			return -ECHILD;
		sleep_ms(20);
	}
}

static struct json_object *find_node(struct json_object *nodes, const char *name)
{
	if (!json_object_is_type(nodes, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(nodes); i++) {
		struct json_object *n = json_object_array_get_idx(nodes, i);
		const char *s = get_str(n, "node-name");
		if (s && strcmp(s, name) == 0)
			return n;
	}
	return NULL;
}

static struct json_object *find_bitmap(struct json_object *node, const char *name)
{
	struct json_object *bitmaps;
	if (!json_object_object_get_ex(node, "dirty-bitmaps", &bitmaps) ||
	    !json_object_is_type(bitmaps, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(bitmaps); i++) {
		struct json_object *b = json_object_array_get_idx(bitmaps, i);
		const char *s = get_str(b, "name");
		if (s && strcmp(s, name) == 0)
			return b;
	}
	return NULL;
}

/* Waits for the JOB_STATUS_CHANGE of job id to status. */
static int wait_job_status(struct qmp *q, const char *id, const char *status)
{
	for (;;) {
		_cleanup_(json_putp) struct json_object *ev = NULL;
		int r = qmp_wait_event(q, "JOB_STATUS_CHANGE", 5000, &ev);
		if (r < 0)
			return r;
		struct json_object *data;
		if (!json_object_object_get_ex(ev, "data", &data))
			return -EPROTO;
		const char *s = get_str(data, "status"), *i = get_str(data, "id");
		if (s && i && strcmp(s, status) == 0 && strcmp(i, id) == 0)
			return 0;
	}
}

static void test_bitmaps(struct qmp *q, const char *dir)
{
	_cleanup_(json_putp) struct json_object *nodes = NULL;
	int r = qmp_execute(q, "query-named-block-nodes", NULL, &nodes);
	ok_r(r, "query-named-block-nodes");
	struct json_object *disk = find_node(nodes, "disk0");
	ok(disk != NULL, "node disk0 is listed");
	ok(disk && strcmp(get_str(disk, "drv") ?: "", "raw") == 0, "disk0 is raw");
	json_object_put(TAKE_PTR(nodes));

	r = qmp_executef(q, NULL, "block-dirty-bitmap-add",
			 "{\"node\": \"%s\", \"name\": \"%s\", \"granularity\": %u}", "disk0", "b0",
			 4096u);
	ok_r(r, "block-dirty-bitmap-add b0");
	r = qmp_executef(q, &nodes, "query-named-block-nodes", "{\"flat\": true}");
	ok_r(r, "query-named-block-nodes flat");
	struct json_object *b = find_bitmap(find_node(nodes, "disk0"), "b0");
	ok(b != NULL, "disk0 has bitmap b0");
	ok(b && get_int(b, "granularity") == 4096, "of granularity 4096");
	json_object_put(TAKE_PTR(nodes));

	r = qmp_executef(q, NULL, "block-dirty-bitmap-add",
			 "{\"node\": \"%s\", \"name\": \"%s\", \"granularity\": %u}", "disk0", "b0",
			 4096u);
	ok(r == -EREMOTEIO, "adding it twice: -EREMOTEIO (%d): %s", r, qmp_last_error(q));
	r = qmp_executef(q, NULL, "block-dirty-bitmap-remove",
			 "{\"node\": \"%s\", \"name\": \"%s\"}", "disk0", "b0");
	ok_r(r, "block-dirty-bitmap-remove b0");
	r = qmp_executef(q, &nodes, "query-named-block-nodes", NULL);
	ok(r == 0 && find_node(nodes, "disk0") && !find_bitmap(find_node(nodes, "disk0"), "b0"),
	   "b0 is gone");
	json_object_put(TAKE_PTR(nodes));

	r = qmp_executef(q, NULL, "block-dirty-bitmap-remove",
			 "{\"node\": \"%s\", \"name\": \"%s\"}", "disk0", "b0");
	ok(r == -EREMOTEIO, "removing a missing bitmap: -EREMOTEIO (%d)", r);
	ok(strstr(qmp_last_error(q), "GenericError: ") == qmp_last_error(q) &&
		   strstr(qmp_last_error(q), "'b0'"),
	   "the error has its class and names the bitmap: %s", qmp_last_error(q));
	r = qmp_execute(q, "no-such-command", NULL, NULL);
	ok(r == -EREMOTEIO && strstr(qmp_last_error(q), "CommandNotFound"),
	   "an unknown command: %s", qmp_last_error(q));
	r = qmp_hmp(q, "info block", NULL);
	ok(r == -EREMOTEIO, "the storage daemon has no HMP: %s", qmp_last_error(q));

	/* A job: its events arrive around the command's reply. */
	_cleanup_free_ char *file = NULL;
	if (asprintf(&file, "%s/created.img", dir) < 0)
		abort();
	qmp_clear_events(q);
	r = qmp_executef(q, NULL, "blockdev-create",
			 "{\"job-id\": \"c1\", \"options\": {\"driver\": \"file\", \"filename\": "
			 "\"%s\", \"size\": 1048576}}",
			 file);
	ok_r(r, "blockdev-create job c1");
	r = wait_job_status(q, "c1", "concluded");
	ok_r(r, "JOB_STATUS_CHANGE concluded of c1");
	r = qmp_executef(q, NULL, "job-dismiss", "{\"id\": \"c1\"}");
	ok_r(r, "job-dismiss c1");
	r = wait_job_status(q, "c1", "null");
	ok_r(r, "JOB_STATUS_CHANGE null of c1");
	r = qmp_wait_event(q, "NO_SUCH_EVENT", 100, NULL);
	ok(r == -ETIMEDOUT, "waiting for an event that does not come: -ETIMEDOUT (%d)", r);
	unlink(file);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		abort();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* What other clients get while q holds the monitor; q may be replaced. */
static void test_second_client(struct qmp **q, const char *sock, pid_t qsd)
{
	/* A client queued behind q goes on once q leaves. */
	pid_t child = fork();
	if (child < 0)
		abort();
	if (child == 0) {
		*q = qmp_free(*q); /* our copy of the parent's connection */
		struct qmp *c = NULL;
		int r = qmp_connect(sock, 10000, &c);
		if (r == 0)
			r = qmp_execute(c, "query-version", NULL, NULL);
		qmp_free(c);
		_exit(r == 0 ? 0 : 1);
	}
	sleep_ms(300);
	int status = 0;
	ok(waitpid(child, &status, WNOHANG) == 0,
	   "a second client waits while the first is served");
	*q = qmp_free(*q);
	ok(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	   "and is served once the first leaves (status %#x)", status);

	int r = connect_retry(sock, qsd, q);
	ok_r(r, "reconnect");
	if (r < 0)
		return;

	struct qmp *other = NULL;
	int64_t t0 = ferry_mono_ns();
	r = qmp_connect(sock, 500, &other);
	ok(r == -EBUSY, "a second client gets -EBUSY (%d)", r);
	ok(ms_since(t0) >= 490, "after its timeout (%lld ms)", (long long)ms_since(t0));
	qmp_free(other);

	/* Fill the listener's queue: qemu's backlog is 1, Linux takes one
	 * more; then connect() itself says EAGAIN. */
	int raw[4], nraw = 0;
	while (nraw < 4) {
		int fd = raw_connect(sock);
		if (fd < 0)
			break;
		raw[nraw++] = fd;
	}
	t0 = ferry_mono_ns();
	r = qmp_connect(sock, 5000, &other);
	ok(r == -EBUSY && ms_since(t0) < 1000, "with the queue full, -EBUSY at once (%d, %lld ms)",
	   r, (long long)ms_since(t0));
	qmp_free(other);
	for (int i = 0; i < nraw; i++)
		close(raw[i]);

	r = qmp_execute(*q, "query-version", NULL, NULL);
	ok_r(r, "the first client is served all along");
}

static void test_hmp(const char *dir)
{
	_cleanup_free_ char *sock = NULL, *log = NULL, *qmp_arg = NULL;
	if (asprintf(&sock, "%s/vm.sock", dir) < 0 || asprintf(&log, "%s/qemu.log", dir) < 0 ||
	    asprintf(&qmp_arg, "unix:%s,server=on,wait=off", sock) < 0)
		abort();
	char *argv[] = { "qemu-system-x86_64", "-M",       "none", "-accel", "tcg",   "-S",
			 "-nodefaults",        "-display", "none", "-qmp",   qmp_arg, NULL };
	pid_t pid = spawn(argv, log);
	_cleanup_(qmp_freep) struct qmp *q = NULL;
	int r = connect_retry(sock, pid, &q);
	ok_r(r, "connect to qemu-system-x86_64 -M none");
	if (r == 0) {
		_cleanup_free_ char *out = NULL;
		r = qmp_hmp(q, "info version", &out);
		ok(r == 0 && out && strstr(out, "7.") != NULL, "HMP info version: %s",
		   out ? chomp(out) : qmp_last_error(q));
		free(TAKE_PTR(out));
		r = qmp_hmp(q, "no-such-hmp", &out);
		ok(r == 0 && out && strstr(out, "unknown command"),
		   "an HMP error comes as output: %s", out ? chomp(out) : qmp_last_error(q));
		r = qmp_execute(q, "quit", NULL, NULL);
		ok(r == 0 || r == -ECONNRESET, "quit (%d)", r);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(sock);
	unlink(log);
}

static void test_qemu(void)
{
	if (!have_program("qemu-storage-daemon")) {
		skip("qemu-storage-daemon not installed");
		return;
	}
	char dir[] = "/tmp/ferry-test-qmp-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	_cleanup_free_ char *img = NULL, *sock = NULL, *log = NULL, *chardev = NULL, *file = NULL;
	if (asprintf(&img, "%s/disk.img", dir) < 0 || asprintf(&sock, "%s/qmp.sock", dir) < 0 ||
	    asprintf(&log, "%s/qsd.log", dir) < 0 ||
	    asprintf(&chardev, "socket,path=%s,server=on,wait=off,id=m", sock) < 0 ||
	    asprintf(&file, "driver=file,filename=%s,node-name=f0", img) < 0)
		abort();
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, 64 << 20) < 0)
		abort();
	close(fd);

	char *argv[] = { "qemu-storage-daemon",
			 "--chardev",
			 chardev,
			 "--monitor",
			 "chardev=m",
			 "--blockdev",
			 file,
			 "--blockdev",
			 "driver=raw,file=f0,node-name=disk0",
			 NULL };
	pid_t qsd = spawn(argv, log);
	_cleanup_(qmp_freep) struct qmp *q = NULL;
	int r = connect_retry(sock, qsd, &q);
	ok_r(r, "connect to qemu-storage-daemon");
	if (r == 0) {
		test_bitmaps(q, dir);
		test_second_client(&q, sock, qsd);
	}

	kill(qsd, SIGKILL);
	waitpid(qsd, NULL, 0);
	if (q) {
		r = qmp_execute(q, "query-version", NULL, NULL);
		ok(r == -ECONNRESET, "the daemon killed: -ECONNRESET (%d): %s", r,
		   qmp_last_error(q));
		r = qmp_execute(q, "query-version", NULL, NULL);
		ok(r == -ENOTCONN, "then -ENOTCONN (%d)", r);
	}
	struct qmp *again = NULL;
	r = qmp_connect(sock, 1000, &again);
	ok(r == -ECONNREFUSED, "its socket file left behind: -ECONNREFUSED (%d)", r);

	if (have_program("qemu-system-x86_64"))
		test_hmp(dir);
	else
		skip("qemu-system-x86_64 not installed");

	unlink(sock);
	unlink(img);
	unlink(log);
	rmdir(dir);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_connect_failures();
	test_scripted();
	test_qemu();
	return tap_done();
}
