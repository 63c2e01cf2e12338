/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest agent client (qga.h) and the bounded freeze (freeze.h) against
 * a fake guest agent: a thread of this test that listens on a unix socket
 * and serves one client at a time as qemu's socket chardev does, speaking
 * qemu-ga's protocol (0xFF resets its parser and draws an error reply,
 * guest-sync-delimited answers behind a 0xFF, command ids are echoed) over
 * a pretend file system state, frozen or thawed. A fake is for the
 * protocol only: tests/integration/app-consistent.sh freezes a real guest.
 *
 * The client: resync past a previous client's stale replies (also a stale
 * delimited reply arriving with ours in one read), a late reply after a
 * timeout, guest errors, a silent agent, a busy one. The freeze:
 * held until asked; thawed by the limit; thawed when the process that
 * asked dies by SIGKILL; SIGTERM does not stop the freezer; a freeze the
 * guest refuses, one that freezes nothing and one slower than the limit
 * leave the guest thawed; recovery of a guest left frozen; the fault site.
 */
#include "freeze.h"
#include "qga.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/fault.h"
#include "ferry/util.h"
#include "tap.h"

/* ---- the fake guest agent ---- */

struct fake {
	char path[108];
	int listen_fd;
	pthread_t thread;
	atomic_int quit;
	pthread_mutex_t lock;
	/* behaviour, set by the test */
	int mute;              /* answers nothing */
	int freeze_delay_ms;   /* the freeze hook's time */
	int freeze_error;      /* answers the freeze with an error */
	int fs_count;          /* file systems a freeze freezes */
	const char *on_accept; /* bytes sent to each new client first */
	int stale_sync;        /* a stale delimited reply before each sync's, in one send */
	/* state */
	int frozen;
	int64_t frozen_ns, thawed_ns;
	int freezes, thaws, clients;
	pid_t last_peer;
};

static int64_t now_ms(void)
{
	return ferry_mono_ns() / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void put_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
		if (k <= 0)
			return;
		s += k;
		n -= (size_t)k;
	}
}

static void reply(int fd, struct json_object *id, const char *body)
{
	char buf[512];
	if (id)
		snprintf(buf, sizeof(buf), "{%s, \"id\": %s}\n", body,
			 json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN));
	else
		snprintf(buf, sizeof(buf), "{%s}\n", body);
	put_all(fd, buf, strlen(buf));
}

static void handle(struct fake *f, int fd, struct json_object *cmd)
{
	struct json_object *ex = NULL, *id = NULL, *args = NULL, *v = NULL;
	json_object_object_get_ex(cmd, "execute", &ex);
	json_object_object_get_ex(cmd, "id", &id);
	json_object_object_get_ex(cmd, "arguments", &args);
	const char *name = ex ? json_object_get_string(ex) : "";
	char body[256];
	pthread_mutex_lock(&f->lock);
	int mute = f->mute;
	pthread_mutex_unlock(&f->lock);
	if (mute)
		return;
	if (strcmp(name, "guest-sync-delimited") == 0) {
		json_object_object_get_ex(args, "id", &v);
		pthread_mutex_lock(&f->lock);
		int stale = f->stale_sync;
		pthread_mutex_unlock(&f->lock);
		if (stale) {
			/* A previous client's sync answered late, and ours, as
			 * one read on the other end. */
			char both[128];
			int n = snprintf(both, sizeof(both),
					 "\xff{\"return\": 4242}\n\xff{\"return\": %lld}\n",
					 (long long)json_object_get_int64(v));
			put_all(fd, both, (size_t)n);
			return;
		}
		put_all(fd, "\xff", 1);
		snprintf(body, sizeof(body), "\"return\": %lld",
			 (long long)json_object_get_int64(v));
		reply(fd, id, body);
	} else if (strcmp(name, "guest-ping") == 0) {
		reply(fd, id, "\"return\": {}");
	} else if (strcmp(name, "guest-fsfreeze-status") == 0) {
		pthread_mutex_lock(&f->lock);
		int frozen = f->frozen;
		pthread_mutex_unlock(&f->lock);
		reply(fd, id, frozen ? "\"return\": \"frozen\"" : "\"return\": \"thawed\"");
	} else if (strcmp(name, "guest-fsfreeze-freeze") == 0) {
		pthread_mutex_lock(&f->lock);
		int delay = f->freeze_delay_ms, err = f->freeze_error, n = f->fs_count;
		f->freezes++;
		pthread_mutex_unlock(&f->lock);
		sleep_ms(delay); /* qemu-ga runs its hook, then freezes: nothing else meanwhile */
		if (err) {
			reply(fd, id,
			      "\"error\": {\"class\": \"GenericError\", \"desc\": \"execution of "
			      "fsfreeze hook failed\"}");
			return;
		}
		pthread_mutex_lock(&f->lock);
		f->frozen = 1;
		f->frozen_ns = ferry_mono_ns();
		pthread_mutex_unlock(&f->lock);
		snprintf(body, sizeof(body), "\"return\": %d", n);
		reply(fd, id, body);
	} else if (strcmp(name, "guest-fsfreeze-thaw") == 0) {
		pthread_mutex_lock(&f->lock);
		int n = f->frozen ? f->fs_count : 0;
		f->frozen = 0;
		f->thaws++;
		f->thawed_ns = ferry_mono_ns();
		pthread_mutex_unlock(&f->lock);
		snprintf(body, sizeof(body), "\"return\": %d", n);
		reply(fd, id, body);
	} else {
		reply(fd, id, "\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}");
	}
}

/* One client, until it leaves or the test ends. */
static void serve(struct fake *f, int fd)
{
	struct json_tokener *tok = json_tokener_new();
	pthread_mutex_lock(&f->lock);
	const char *first = f->on_accept;
	pthread_mutex_unlock(&f->lock);
	if (first)
		put_all(fd, first, strlen(first));
	char buf[4096];
	while (!atomic_load(&f->quit)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n;) {
			if ((unsigned char)buf[i] == 0xff) {
				/* qemu-ga: the byte is not JSON; it resets and says so. */
				json_tokener_reset(tok);
				reply(fd, NULL,
				      "\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON "
				      "parse error, stray '\\\\uFFFD'\"}");
				i++;
				continue;
			}
			size_t end = (size_t)i;
			while (end < (size_t)n && (unsigned char)buf[end] != 0xff)
				end++;
			struct json_object *o =
				json_tokener_parse_ex(tok, buf + i, (int)(end - (size_t)i));
			size_t used = json_tokener_get_parse_end(tok);
			if (o) {
				handle(f, fd, o);
				json_object_put(o);
				json_tokener_reset(tok);
			} else if (json_tokener_get_error(tok) != json_tokener_continue) {
				json_tokener_reset(tok);
				used = end - (size_t)i;
			}
			i += (ssize_t)(used ? used : end - (size_t)i);
		}
	}
	json_tokener_free(tok);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	while (!atomic_load(&f->quit)) {
		struct pollfd p = { .fd = f->listen_fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		struct ucred cred;
		socklen_t len = sizeof(cred);
		pthread_mutex_lock(&f->lock);
		f->clients++;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			f->last_peer = cred.pid;
		pthread_mutex_unlock(&f->lock);
		serve(f, fd);
		close(fd);
	}
	return NULL;
}

static void fake_start(struct fake *f, const char *dir, const char *name)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "%s/%s", dir, name);
	f->fs_count = 2;
	pthread_mutex_init(&f->lock, NULL);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* qemu's chardev listens with a backlog of one and serves one client. */
	if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(f->listen_fd, 1) < 0 || pthread_create(&f->thread, NULL, fake_main, f) != 0)
		abort();
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->quit, 1);
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	unlink(f->path);
}

#define FAKE_GET(f, field)                              \
	({                                              \
		pthread_mutex_lock(&(f)->lock);         \
		__typeof__((f)->field) v_ = (f)->field; \
		pthread_mutex_unlock(&(f)->lock);       \
		v_;                                     \
	})
#define FAKE_SET(f, field, value)                 \
	do {                                      \
		pthread_mutex_lock(&(f)->lock);   \
		(f)->field = (value);             \
		pthread_mutex_unlock(&(f)->lock); \
	} while (0)

/* Waits up to ms for the fake's state to be thawed; the ms it took, or -1. */
static int64_t await_thawed(struct fake *f, int ms)
{
	int64_t t0 = now_ms();
	while (now_ms() - t0 < ms) {
		if (!FAKE_GET(f, frozen))
			return now_ms() - t0;
		sleep_ms(5);
	}
	return FAKE_GET(f, frozen) ? -1 : now_ms() - t0;
}

/* ---- the client ---- */

static void test_client(const char *dir)
{
	struct fake f;
	fake_start(&f, dir, "qga1.sock");
	/* What a previous client left: a late reply carrying the id our first
	 * command will have, half a message, a delimited reply to another
	 * sync. All before our sync's delimiter: dropped. */
	f.on_accept = "{\"return\": {\"stale\": 1}, \"id\": 1}\n{\"retu\xff{\"return\": 4242}\n";
	struct qga *g = NULL;
	int r = qga_connect(f.path, 2000, &g);
	ok_r(r, "connects and resyncs past a previous client's replies");
	if (r < 0) {
		fake_stop(&f);
		return;
	}
	struct json_object *v = NULL;
	r = qga_execute(g, "guest-ping", NULL, -1, &v);
	ok(r == 0 && json_object_is_type(v, json_type_object) && json_object_object_length(v) == 0,
	   "guest-ping: its own reply, not the stale one (%d)", r);
	json_object_put(v);
	int frozen = -1, n = -1;
	ok(qga_frozen(g, -1, &frozen) == 0 && frozen == 0, "status: thawed");
	ok(qga_thaw(g, -1, &n) == 0 && n == 0, "thaw of a thawed guest: 0 file systems");
	ok(qga_freeze(g, -1, &n) == 0 && n == 2, "freeze: 2 file systems (%d)", n);
	ok(qga_frozen(g, -1, &frozen) == 0 && frozen == 1, "status: frozen");
	ok(qga_thaw(g, -1, &n) == 0 && n == 2, "thaw: 2 file systems");

	r = qga_execute(g, "guest-no-such-thing", NULL, -1, NULL);
	ok(r == -EREMOTEIO && strstr(qga_last_error(g), "CommandNotFound: nope"),
	   "a guest error: -EREMOTEIO, '%s'", qga_last_error(g));
	ok(qga_ping(g, -1) == 0 && !*qga_last_error(g), "usable after an error");

	/* A reply later than the timeout must not answer the next command. */
	FAKE_SET(&f, freeze_delay_ms, 400);
	int64_t t0 = now_ms();
	r = qga_freeze(g, 100, &n);
	ok(r == -ETIMEDOUT && now_ms() - t0 < 300,
	   "a slow freeze: -ETIMEDOUT after the timeout (%d)", r);
	ok(strstr(qga_last_error(g), "no answer to guest-fsfreeze-freeze") != NULL, "'%s'",
	   qga_last_error(g));
	r = qga_frozen(g, 2000, &frozen);
	ok(r == 0 && frozen == 1, "the next command resyncs behind the late reply: frozen (%d)", r);
	ok(qga_thaw(g, -1, &n) == 0 && n == 2, "and thaws");
	FAKE_SET(&f, freeze_delay_ms, 0);
	qga_free(g);

	/* A second client waits while the first is served. */
	struct qga *g1 = NULL, *g2 = NULL;
	ok_r(qga_connect(f.path, 2000, &g1), "first client");
	t0 = now_ms();
	r = qga_connect(f.path, 300, &g2);
	ok(r == -EBUSY, "a second client while the first is served: -EBUSY (%d, %lld ms)", r,
	   (long long)(now_ms() - t0));
	qga_free(g1);
	qga_free(g2);

	/* Nobody answers: qemu runs, the guest agent does not. */
	FAKE_SET(&f, mute, 1);
	sleep_ms(100); /* the first client's turn ends */
	t0 = now_ms();
	r = qga_connect(f.path, 300, &g);
	ok(r == -ETIMEDOUT, "a silent guest agent: -ETIMEDOUT (%d) after %lld ms", r,
	   (long long)(now_ms() - t0));
	fake_stop(&f);

	char nowhere[160];
	snprintf(nowhere, sizeof(nowhere), "%s/none.sock", dir);
	r = qga_connect(nowhere, 300, &g);
	ok(r == -ENOENT, "no socket: -ENOENT (%d)", r);
}

/* A stale delimited reply and ours in one read: the 0xFF between them is
 * no JSON, and must cut the stream rather than fail it. */
static void test_stale_sync(const char *dir)
{
	struct fake f;
	fake_start(&f, dir, "qga3.sock");
	FAKE_SET(&f, stale_sync, 1);
	struct qga *g = NULL;
	int r = qga_connect(f.path, 2000, &g);
	ok_r(r, "resyncs past a stale delimited reply sent with ours in one send()");
	if (r < 0) {
		printf("#   %s\n", g ? qga_last_error(g) : "(no connection)");
		fake_stop(&f);
		return;
	}
	ok(qga_ping(g, -1) == 0, "and the connection works on ('%s')", qga_last_error(g));
	/* The resync after a timeout meets the same. */
	FAKE_SET(&f, freeze_delay_ms, 400);
	int n = -1, frozen = -1;
	r = qga_freeze(g, 100, &n);
	ok(r == -ETIMEDOUT, "a slow freeze times out (%d)", r);
	r = qga_frozen(g, 2000, &frozen);
	ok(r == 0 && frozen == 1, "the next command resyncs past both replies: frozen (%d, '%s')",
	   r, qga_last_error(g));
	ok(qga_thaw(g, -1, &n) == 0 && n == 2, "and thaws");
	FAKE_SET(&f, freeze_delay_ms, 0);
	qga_free(g);

	/* freeze_recover's connection, and the freezer's, resync the same way. */
	FAKE_SET(&f, frozen, 1);
	char why[256] = "";
	r = freeze_recover(f.path, 2000, why, sizeof(why));
	ok(r == 1 && !FAKE_GET(&f, frozen), "freeze_recover thaws behind a stale reply (%d, '%s')",
	   r, why);
	fake_stop(&f);
}

/* ---- the freeze ---- */

static void test_freeze(const char *dir)
{
	struct fake f;
	fake_start(&f, dir, "qga2.sock");
	char why[256] = "";
	struct freeze *fz = NULL;
	struct freeze_report rep;

	int r = freeze_begin(f.path, 5000, &fz, why, sizeof(why));
	ok_r(r, "freeze_begin (%s)", why);
	ok(FAKE_GET(&f, frozen), "the guest is frozen");
	sleep_ms(50);
	ok(FAKE_GET(&f, frozen), "and stays frozen while the cut runs");
	r = freeze_end(fz, &rep);
	ok(r == 0 && rep.held && !rep.by_limit && rep.frozen_fs == 2 && rep.thawed_fs == 2,
	   "freeze_end: held, 2 frozen, 2 thawed (%d, '%s')", r, rep.message);
	ok(!FAKE_GET(&f, frozen), "thawed");
	ok(rep.window_ns >= 50 * 1000000LL && rep.window_ns < 2000 * 1000000LL,
	   "window measured: %lld ms", (long long)(rep.window_ns / 1000000));

	/* The limit thaws before the cut is done: not held. */
	r = freeze_begin(f.path, 300, &fz, why, sizeof(why));
	ok_r(r, "freeze_begin with a 300 ms limit");
	int64_t frozen_at = FAKE_GET(&f, frozen_ns);
	int64_t took = await_thawed(&f, 3000);
	int64_t held_ms = (FAKE_GET(&f, thawed_ns) - frozen_at) / 1000000;
	ok(took >= 0 && held_ms >= 250 && held_ms < 1000,
	   "the limit thawed the guest after %lld ms", (long long)held_ms);
	r = freeze_end(fz, &rep);
	ok(r == 0 && !rep.held && rep.by_limit && strstr(rep.message, "limit"),
	   "freeze_end: not held, by the limit ('%s')", rep.message);

	/* The process that froze dies by SIGKILL: the freezer thaws at once,
	 * long before the limit. */
	pid_t pid = fork();
	if (pid == 0) {
		struct freeze *z = NULL;
		if (freeze_begin(f.path, 20000, &z, NULL, 0) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	int64_t t_dead = now_ms();
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	   "the process that froze was killed with the guest frozen");
	took = await_thawed(&f, 5000);
	ok(took >= 0 && took < 2000, "its freezer thawed the guest %lld ms after its death",
	   (long long)(took >= 0 ? took : now_ms() - t_dead));

	/* SIGTERM (a service stop) does not end a freezer before its thaw. */
	r = freeze_begin(f.path, 5000, &fz, why, sizeof(why));
	ok_r(r, "freeze_begin");
	pid_t freezer = FAKE_GET(&f, last_peer);
	ok(freezer > 0 && kill(freezer, SIGTERM) == 0 && kill(freezer, SIGINT) == 0 &&
		   kill(freezer, SIGHUP) == 0,
	   "SIGTERM, SIGINT and SIGHUP sent to the freezer (pid %d)", (int)freezer);
	sleep_ms(100);
	ok(kill(freezer, 0) == 0 && FAKE_GET(&f, frozen), "it lives on; the guest stays frozen");
	r = freeze_end(fz, &rep);
	ok(r == 0 && rep.held, "and thaws when asked: held (%d, '%s')", r, rep.message);
	ok(!FAKE_GET(&f, frozen), "thawed");

	/* Freezes that fail leave the guest thawed. */
	FAKE_SET(&f, freeze_error, 1);
	r = freeze_begin(f.path, 5000, &fz, why, sizeof(why));
	ok(r == -EREMOTEIO && strstr(why, "hook failed"), "the guest refuses: -EREMOTEIO, '%s'",
	   why);
	ok(!FAKE_GET(&f, frozen), "not frozen");
	FAKE_SET(&f, freeze_error, 0);

	FAKE_SET(&f, fs_count, 0);
	int thaws = FAKE_GET(&f, thaws);
	r = freeze_begin(f.path, 5000, &fz, why, sizeof(why));
	ok(r == -ENODEV && FAKE_GET(&f, thaws) == thaws + 1,
	   "nothing to freeze: -ENODEV, and a thaw to leave the guest agent's state ('%s')", why);
	FAKE_SET(&f, fs_count, 2);

	FAKE_SET(&f, freeze_delay_ms, 800);
	int64_t t0 = now_ms();
	r = freeze_begin(f.path, 300, &fz, why, sizeof(why));
	ok(r == -ETIMEDOUT && strstr(why, "did not end within 300 ms"),
	   "a freeze slower than the limit: -ETIMEDOUT after %lld ms, '%s'",
	   (long long)(now_ms() - t0), why);
	ok(!FAKE_GET(&f, frozen), "and the guest is thawed behind it");
	FAKE_SET(&f, freeze_delay_ms, 0);

	/* Recovery at an agent's start. */
	FAKE_SET(&f, frozen, 1);
	r = freeze_recover(f.path, 2000, why, sizeof(why));
	ok(r == 1 && !FAKE_GET(&f, frozen), "freeze_recover thaws a frozen guest (%d)", r);
	r = freeze_recover(f.path, 2000, why, sizeof(why));
	ok(r == 0, "and leaves a thawed one alone (%d)", r);

	if (ferry_fault_supported()) {
		ok(ferry_fault_plan("freeze:eio") == 0, "fault plan freeze:eio");
		int freezes = FAKE_GET(&f, freezes);
		r = freeze_begin(f.path, 5000, &fz, why, sizeof(why));
		ok(r == -EIO && FAKE_GET(&f, freezes) == freezes,
		   "an injected fault fails the freeze without asking the guest (%d)", r);
		ferry_fault_plan(NULL);
	}

	FAKE_SET(&f, mute, 1);
	t0 = now_ms();
	r = freeze_begin(f.path, 400, &fz, why, sizeof(why));
	ok(r == -ETIMEDOUT && strstr(why, "no guest agent answers"),
	   "a silent guest agent: -ETIMEDOUT after %lld ms, '%s'", (long long)(now_ms() - t0), why);
	fake_stop(&f);

	r = freeze_begin(f.path, 400, &fz, why, sizeof(why));
	ok((r == -ENOENT || r == -ECONNREFUSED) && strstr(why, "no guest agent socket"),
	   "no socket: %d, '%s'", r, why);
}

int main(void)
{
	char dir[] = "/tmp/ferry-test-qga.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	test_client(dir);
	test_stale_sync(dir);
	test_freeze(dir);
	rmdir(dir);
	return tap_done();
}
