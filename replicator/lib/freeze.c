/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bounded freeze (freeze.h). Agent and freezer talk over a
 * SOCK_SEQPACKET socketpair, one fixed-size message per send: the freezer
 * says FROZEN or FAILED, the agent says THAW, the freezer says THAWED and
 * exits. The agent's end is the freezer's lifeline: when the agent dies the
 * kernel closes it, and the freezer, which polls its end with the limit as
 * timeout, sees end of file and thaws at once.
 */
#include "freeze.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/fault.h"
#include "ferry/util.h"
#include "qga.h"

enum msg_type {
	MSG_FROZEN = 1, /* freezer: the guest is frozen */
	MSG_FAILED,     /* freezer: it is not (error, text); it exits */
	MSG_THAW,       /* agent: thaw now */
	MSG_THAWED,     /* freezer: done (error, count, by_limit, times); it exits */
};

struct msg {
	uint32_t type;
	int32_t error;     /* -errno or 0 */
	int32_t count;     /* FROZEN: file systems frozen; THAWED: thawed */
	uint32_t by_limit; /* THAWED: the limit, not the agent, asked for it */
	int64_t t0, t1;    /* FROZEN: freeze sent, answered; THAWED: thaw sent, answered */
	char text[224];
};

struct freeze {
	pid_t pid;
	int sock;
	int frozen_fs;
	int64_t freeze_sent_ns, frozen_ns;
};

__attribute__((format(printf, 3, 4))) static void say(char *buf, size_t size, const char *fmt, ...)
{
	if (!buf || !size)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

static int send_msg(int sock, const struct msg *m)
{
	for (;;) {
		ssize_t n = send(sock, m, sizeof(*m), MSG_NOSIGNAL);
		if (n == (ssize_t)sizeof(*m))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : -EIO;
	}
}

/* The next message within timeout_ms (negative: forever): 0, -ETIMEDOUT,
 * -ECONNRESET at end of file, -EPROTO for a message of another size. */
static int recv_msg(int sock, int timeout_ms, struct msg *m)
{
	int64_t deadline = timeout_ms < 0 ? -1 : ferry_mono_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		int ms = -1;
		if (deadline >= 0) {
			int64_t left = deadline - ferry_mono_ns();
			ms = left <= 0 ? 0 :
					 (int)MIN(DIV_ROUND_UP(left, 1000000), (int64_t)INT32_MAX);
		}
		struct pollfd p = { .fd = sock, .events = POLLIN };
		int n = poll(&p, 1, ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		ssize_t k = recv(sock, m, sizeof(*m), MSG_DONTWAIT);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k < 0)
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		if (k == 0)
			return -ECONNRESET;
		if (k != (ssize_t)sizeof(*m))
			return -EPROTO;
		m->text[sizeof(m->text) - 1] = 0;
		return 0;
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* What a failed connection means, for people. */
static void connect_why(int r, const char *path, char *buf, size_t size)
{
	switch (r) {
	case -ENOENT:
	case -ECONNREFUSED:
		say(buf, size, "no guest agent socket at %s (is the VM running?)", path);
		break;
	case -EBUSY:
		say(buf, size, "another client holds the guest agent at %s", path);
		break;
	case -ETIMEDOUT:
		say(buf, size,
		    "no guest agent answers at %s (does qemu-ga run in the guest, on the "
		    "org.qemu.guest_agent.0 port?)",
		    path);
		break;
	default:
		say(buf, size, "cannot talk to the guest agent at %s: %s", path, strerror(-r));
		break;
	}
}

/* ---- the freezer process ---- */

/* Errors after which the connection is gone and a retry reconnects. */
static int connection_lost(int r)
{
	return r == -ENOTCONN || r == -ECONNRESET || r == -EPROTO || r == -EMSGSIZE || r == -EPIPE;
}

/* What is left until deadline, in ms, at most cap and at least 1. */
static int ms_until(int64_t deadline, int64_t cap)
{
	int64_t left = DIV_ROUND_UP(MAX(deadline - ferry_mono_ns(), (int64_t)0), 1000000);
	return (int)MAX(MIN(left, cap), (int64_t)1);
}

/*
 * Thaws, over *g or a new connection, until it succeeds or
 * FREEZE_THAW_RETRY_MS have passed. 0 with *ret_count, or the last error
 * with text in buf. Every wait is cut to what is left of that time (a
 * connection takes at most half of it, so that its thaw has the rest):
 * it returns within FREEZE_THAW_RETRY_MS and a few ms, which freeze_end()
 * counts on.
 */
static int thaw_hard(struct qga **g, const char *path, int *ret_count, char *buf, size_t size)
{
	int64_t giveup = ferry_mono_ns() + (int64_t)FREEZE_THAW_RETRY_MS * 1000000;
	for (;;) {
		int r;
		if (!*g) {
			int64_t half = (giveup - ferry_mono_ns()) / 2000000;
			r = qga_connect(path,
					ms_until(giveup, MIN(half, (int64_t)FREEZE_CONNECT_MS)), g);
			if (r < 0)
				connect_why(r, path, buf, size);
		} else {
			r = 0;
		}
		if (r >= 0) {
			r = qga_thaw(*g, ms_until(giveup, FREEZE_CONNECT_MS), ret_count);
			if (r >= 0)
				return 0;
			say(buf, size, "thaw: %s", qga_last_error(*g));
			if (connection_lost(r))
				*g = qga_free(*g);
		}
		if (ferry_mono_ns() + 100 * 1000000LL >= giveup)
			return r;
		sleep_ms(100);
	}
}

/* Leaves the guest thawed after a freeze that failed: the guest agent
 * thaws what it froze when it answers with an error, but one that did not
 * answer in time may still be freezing. */
static void unfreeze(struct qga **g, const char *path, int r, char *buf, size_t size)
{
	int frozen = 1;
	if (r != -ETIMEDOUT && *g && qga_frozen(*g, FREEZE_CONNECT_MS, &frozen) >= 0 && !frozen)
		return;
	int n = 0;
	char why[160] = "";
	size_t len = strlen(buf);
	if (thaw_hard(g, path, &n, why, sizeof(why)) < 0)
		say(buf + len, size - len, "; the guest may still be frozen: %s", why);
	else if (n > 0)
		say(buf + len, size - len, "; thawed %d file systems again", n);
}

/* Closes every descriptor from lo to hi (inclusive). close_range() where
 * the kernel has it (5.9); before, close() on each up to the soft
 * RLIMIT_NOFILE, above which no descriptor can have been opened unless
 * the limit was lowered later (then some may stay open). No allocation:
 * this runs in a fork of a threaded process. */
static void close_fds(unsigned lo, unsigned hi)
{
	if (lo > hi || close_range(lo, hi, 0) == 0)
		return;
	struct rlimit rl;
	rlim_t top = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		top = rl.rlim_cur;
	for (rlim_t fd = lo; fd <= hi && fd < top; fd++)
		close((int)fd);
}

/* Keeps sock as descriptor 3 (or, if that cannot be, where it is), stdin
 * and stdout on /dev/null, stderr, and closes everything else. Returns
 * the socket. */
static int isolate(int sock)
{
	int high = fcntl(sock, F_DUPFD, 10);
	if (high < 0)
		high = sock; /* keep what there is; the socket still works */
	int keep = high == 3 || dup2(high, 3) == 3 ? 3 : high;
	int null = open("/dev/null", O_RDWR);
	/* Where /dev/null cannot go, nothing of the caller's stays open (a
	 * pipe's reader must not wait for the freezer): stdin and stdout are
	 * never used. */
	for (int fd = STDIN_FILENO; fd <= STDOUT_FILENO; fd++)
		if (fd != keep && fd != null && (null < 0 || dup2(null, fd) != fd))
			close(fd);
	/* Everything above stderr but the socket. */
	if (keep > 3)
		close_fds(3, (unsigned)keep - 1);
	close_fds((unsigned)MAX(keep + 1, 3), ~0U);
	return keep;
}

static _Noreturn void freezer_main(int sock, const char *path, int limit_ms)
{
	/* A stop of the service (SIGTERM to the group), ^C in a terminal or a
	 * hang-up must not end the freezer before the thaw. */
	struct sigaction ign = { .sa_handler = SIG_IGN };
	sigemptyset(&ign.sa_mask);
	sigaction(SIGTERM, &ign, NULL);
	sigaction(SIGINT, &ign, NULL);
	sigaction(SIGHUP, &ign, NULL);
	sigaction(SIGPIPE, &ign, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_NAME, "ferry-freezer", 0, 0, 0);
	sock = isolate(sock);

	struct msg m = { .type = MSG_FAILED };
	struct qga *g = NULL;
	int r = qga_connect(path, MIN(limit_ms, FREEZE_CONNECT_MS), &g);
	if (r < 0) {
		connect_why(r, path, m.text, sizeof(m.text));
		m.error = r;
		(void)send_msg(sock, &m);
		_exit(1);
	}
	m.t0 = ferry_mono_ns();
	int64_t deadline = m.t0 + (int64_t)limit_ms * 1000000;
	r = qga_freeze(g, limit_ms, &m.count);
	m.t1 = ferry_mono_ns();
	if (r >= 0 && m.count == 0) {
		r = -ENODEV;
		say(m.text, sizeof(m.text), "the guest agent froze no file system");
	} else if (r == -ETIMEDOUT) {
		say(m.text, sizeof(m.text), "the freeze did not end within %d ms (freeze hook?)",
		    limit_ms);
	} else if (r < 0) {
		say(m.text, sizeof(m.text), "%s", qga_last_error(g));
	}
	if (r < 0) {
		unfreeze(&g, path, r, m.text, sizeof(m.text));
		qga_free(g);
		m.error = r;
		(void)send_msg(sock, &m);
		_exit(1);
	}
	m.type = MSG_FROZEN;
	int parent = send_msg(sock, &m) >= 0;

	/* Hold until asked, orphaned, or out of time. */
	int by_limit = 0;
	while (parent) {
		int64_t left = deadline - ferry_mono_ns();
		if (left <= 0) {
			by_limit = 1;
			break;
		}
		struct msg in;
		int k = recv_msg(sock, (int)DIV_ROUND_UP(left, 1000000), &in);
		if (k == -ETIMEDOUT)
			continue;
		if (k < 0 || in.type != MSG_THAW)
			parent = 0;
		break;
	}
	struct msg out = { .type = MSG_THAWED, .by_limit = (uint32_t)by_limit };
	out.t0 = ferry_mono_ns();
	r = thaw_hard(&g, path, &out.count, out.text, sizeof(out.text));
	out.t1 = ferry_mono_ns();
	out.error = r < 0 ? r : 0;
	qga_free(g);
	if (r >= 0)
		out.text[0] = 0;
	if ((!parent || send_msg(sock, &out) < 0) && r < 0)
		dprintf(STDERR_FILENO,
			"ferry-agent: freezer %d: the guest behind %s may still be frozen: %s\n",
			(int)getpid(), path, out.text);
	_exit(r < 0 ? 1 : 0);
}

/* ---- the agent's side ---- */

/* Waits for the freezer to exit: it does right after its last report. */
static void reap(pid_t pid)
{
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/*
 * Freezers that outlived the wait for their report (a machine too loaded
 * to run them, one stopped by a debugger): reaped without waiting at the
 * next freeze_begin() or freeze_end(), so that none stays a zombie for
 * long. Should the table fill, the oldest is waited for.
 */
#define LATE_MAX 8
static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t late[LATE_MAX];

static void reap_late(void)
{
	pthread_mutex_lock(&late_lock);
	for (size_t i = 0; i < LATE_MAX; i++)
		if (late[i] > 0 && waitpid(late[i], NULL, WNOHANG) != 0)
			late[i] = 0; /* reaped, or no longer ours to reap */
	pthread_mutex_unlock(&late_lock);
}

static void reap_later(pid_t pid)
{
	pthread_mutex_lock(&late_lock);
	size_t slot = 0;
	for (size_t i = 0; i < LATE_MAX; i++)
		if (late[i] <= 0) {
			slot = i;
			break;
		}
	if (late[slot] > 0) {
		/* Full: the oldest freezer has had the longest. */
		reap(late[0]);
		memmove(late, late + 1, (LATE_MAX - 1) * sizeof(late[0]));
		slot = LATE_MAX - 1;
	}
	late[slot] = pid;
	pthread_mutex_unlock(&late_lock);
}

/* The longest a freezer lives after its start: its connection, the
 * freeze, the guest agent's status after a failed one, the thaw's
 * retries (thaw_hard() keeps within them), and a margin. */
static int lifetime_ms(int limit_ms)
{
	return 2 * FREEZE_CONNECT_MS + limit_ms + FREEZE_THAW_RETRY_MS + 2000;
}

int freeze_begin(const char *qga_path, int limit_ms, struct freeze **ret, char *why,
		 size_t why_size)
{
	if (limit_ms <= 0)
		limit_ms = FREEZE_DEFAULT_LIMIT_MS;
	reap_late();
	int r = ferry_fault_before(FERRY_FAULT_FREEZE, qga_path);
	if (r < 0) {
		say(why, why_size, "fault injected at the freeze site");
		return r;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		say(why, why_size, "cannot make the freezer's socket: %s", strerror(-r));
		return r;
	}
	_cleanup_close_ int sock = sv[0];
	_cleanup_close_ int child_end = sv[1];
	pid_t pid = fork();
	if (pid < 0) {
		r = -errno;
		say(why, why_size, "cannot start the freezer: %s", strerror(-r));
		return r;
	}
	if (pid == 0) {
		close(sock);
		freezer_main(child_end, qga_path, limit_ms);
	}
	close(TAKE_FD(child_end));

	struct msg m;
	r = recv_msg(sock, lifetime_ms(limit_ms), &m);
	if (r >= 0 && m.type == MSG_FROZEN) {
		struct freeze *f = malloc(sizeof(*f));
		if (!f) {
			close(TAKE_FD(sock)); /* the freezer thaws at end of file */
			reap(pid);
			return -ENOMEM;
		}
		*f = (struct freeze){ .pid = pid,
				      .sock = TAKE_FD(sock),
				      .frozen_fs = m.count,
				      .freeze_sent_ns = m.t0,
				      .frozen_ns = m.t1 };
		/* For tests of the bound: the agent dies with the guest frozen. */
		ferry_fault_after(FERRY_FAULT_FREEZE);
		*ret = f;
		return 0;
	}
	if (r >= 0 && m.type == MSG_FAILED && m.error < 0) {
		say(why, why_size, "%s", m.text);
		r = m.error;
	} else if (r == -ETIMEDOUT) {
		/* Cannot be, by the freezer's own bounds. Its socket closes
		 * below: it thaws at end of file (if it froze after all)
		 * and exits; it is reaped later. */
		say(why, why_size, "the freezer (pid %d) did not report within %d ms", (int)pid,
		    lifetime_ms(limit_ms));
		close(TAKE_FD(sock));
		reap_later(pid);
		return r;
	} else {
		say(why, why_size, "the freezer (pid %d) ended without a report", (int)pid);
		r = -EIO;
	}
	close(TAKE_FD(sock));
	reap(pid);
	return r;
}

int freeze_end(struct freeze *f, struct freeze_report *ret)
{
	struct freeze_report rep = { .frozen_fs = f->frozen_fs,
				     .freeze_ns = f->frozen_ns - f->freeze_sent_ns };
	struct msg m = { .type = MSG_THAW };
	/* The freezer may have thawed by the limit and sent THAWED already;
	 * what it sent is read all the same. */
	(void)send_msg(f->sock, &m);
	reap_late();
	/* thaw_hard() ends within FREEZE_THAW_RETRY_MS and a few ms. */
	int r = recv_msg(f->sock, FREEZE_THAW_RETRY_MS + 2000, &m);
	if (r >= 0 && m.type != MSG_THAWED)
		r = -EPROTO;
	if (r >= 0) {
		rep.by_limit = !!m.by_limit;
		rep.thawed_fs = m.count;
		rep.window_ns = m.t1 - f->frozen_ns;
		r = m.error;
		if (r < 0)
			say(rep.message, sizeof(rep.message), "%s", m.text);
		else if (m.by_limit)
			say(rep.message, sizeof(rep.message),
			    "the freeze limit thawed the guest before the cut was done");
		else if (m.count == 0)
			say(rep.message, sizeof(rep.message),
			    "the guest was no longer frozen at the thaw (thawed by someone "
			    "else?)");
		rep.held = r >= 0 && !m.by_limit && m.count > 0;
	} else {
		say(rep.message, sizeof(rep.message), "no report from the freezer (pid %d): %s",
		    (int)f->pid, strerror(-r));
	}
	close(TAKE_FD(f->sock));
	if (r != -ETIMEDOUT)
		reap(f->pid);
	else
		reap_later(f->pid);
	free(f);
	if (ret)
		*ret = rep;
	return r < 0 ? r : 0;
}

void freeze_abandon(struct freeze *f)
{
	if (!f)
		return;
	close(TAKE_FD(f->sock));
	reap(f->pid);
	free(f);
}

int freeze_recover(const char *qga_path, int timeout_ms, char *why, size_t why_size)
{
	struct qga *g = NULL;
	int r = qga_connect(qga_path, timeout_ms, &g);
	if (r < 0) {
		connect_why(r, qga_path, why, why_size);
		return r;
	}
	int frozen = 0, n = 0;
	r = qga_frozen(g, timeout_ms, &frozen);
	if (r >= 0 && frozen)
		r = qga_thaw(g, timeout_ms, &n);
	if (r < 0)
		say(why, why_size, "%s", qga_last_error(g));
	qga_free(g);
	return r < 0 ? r : frozen;
}
