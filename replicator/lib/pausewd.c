/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pause watchdog (pausewd.h). The child is forked from a threaded
 * agent, so it only makes system calls: no malloc, no stdio, no locks. It
 * keeps the QMP socket and its end of the socket pair, nothing else the
 * agent had open.
 */
#include "pausewd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/util.h"

/* The child's exit status: 0 told in time; RESUMED sent cont and qemu
 * answered; LOST sent cont or tried to, no answer seen. */
#define RESUMED 3
#define LOST 4
#define REPLY_WAIT_MS 5000
#define ID "ferry-pause-watchdog"

struct pausewd {
	pid_t pid;
	int fd; /* our end: a byte says "done", its closing says "agent gone" */
};

static void keep_only(int a, int b)
{
	int lo = MIN(a, b), hi = MAX(a, b);
	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0u, 0);
}

/* Waits until qemu has answered the cont: a monitor drops the commands it
 * has not run yet when its client goes away, so leaving at once could
 * leave the VM paused. */
static int await_reply(int qmp_fd)
{
	char buf[4096];
	size_t have = 0;
	for (int waited = 0; waited < REPLY_WAIT_MS; waited += 100) {
		struct pollfd pfd = { .fd = qmp_fd, .events = POLLIN };
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		/* Keep the tail: the id may straddle two reads. */
		if (have > sizeof(buf) / 2) {
			memmove(buf, buf + have - sizeof(ID), sizeof(ID));
			have = sizeof(ID);
		}
		ssize_t n = read(qmp_fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			return LOST;
		have += (size_t)n;
		buf[have] = 0;
		if (memmem(buf, have, ID, sizeof(ID) - 1))
			return RESUMED;
	}
	return LOST;
}

static _Noreturn void child(int qmp_fd, int sfd, int limit_ms)
{
	/* 0xFF first: if the agent died in the middle of a command, qemu's
	 * JSON parser throws that away instead of swallowing the cont. */
	static const char cont[] = "\xff{\"execute\": \"cont\", \"id\": \"" ID "\"}\n";
	/* Whoever stops the agent must not stop the watchdog before it has
	 * done its job. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	keep_only(qmp_fd, sfd);
	struct pollfd pfd = { .fd = sfd, .events = POLLIN };
	int r;
	do
		r = poll(&pfd, 1, limit_ms);
	while (r < 0 && errno == EINTR);
	char c;
	if (r > 0 && read(sfd, &c, 1) == 1)
		_exit(0);
	/* The deadline, or the agent is gone: resume. */
	if (write(qmp_fd, cont, sizeof(cont) - 1) != (ssize_t)sizeof(cont) - 1)
		_exit(LOST);
	_exit(await_reply(qmp_fd));
}

int pausewd_start(int qmp_fd, int limit_ms, struct pausewd **ret)
{
	int sp[2];
	if (qmp_fd < 0)
		return -ENOTCONN;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	struct pausewd *w = calloc(1, sizeof(*w));
	pid_t pid = w ? fork() : -1;
	if (pid < 0) {
		int r = w ? -errno : -ENOMEM;
		close(sp[0]);
		close(sp[1]);
		free(w);
		return r;
	}
	if (pid == 0)
		child(qmp_fd, sp[0], limit_ms);
	close(sp[0]);
	w->pid = pid;
	w->fd = sp[1];
	*ret = w;
	return 0;
}

int pausewd_finish(struct pausewd *w)
{
	if (!w)
		return 0;
	/* No SIGPIPE when the child has already gone (it fired). */
	(void)send(w->fd, "D", 1, MSG_NOSIGNAL);
	close(w->fd);
	int status, r;
	while ((r = waitpid(w->pid, &status, 0)) < 0 && errno == EINTR)
		;
	r = r < 0 ? -errno : WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : 0;
	free(w);
	return r;
}

void pausewd_finish_later(struct pausewd *w)
{
	if (!w)
		return;
	close(w->fd); /* its EOF: the child resumes the VM at once */
	free(w);
}
