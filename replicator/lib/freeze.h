/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bounded guest freeze, for app-consistent cuts: the guest's file systems
 * are frozen through its guest agent (qga.h: the freeze hook runs first,
 * the database flushes) and thawed again within a limit whatever happens,
 * the agent being killed between freeze and thaw included.
 *
 * freeze_begin() forks a small freezer process that connects to the guest
 * agent, freezes and reports. It keeps the connection (the guest agent
 * serves one client at a time, so nobody comes between) and thaws at the
 * first of: freeze_end() asks; its socket to the agent reaches end of
 * file (the agent died, even by SIGKILL: the kernel closes its end); the
 * limit passes since the freeze command went out. It ignores SIGTERM,
 * SIGINT and SIGHUP until it has thawed (a service stop that kills the
 * whole group must not leave the guest frozen), then exits. A thaw that
 * fails is retried, reconnecting, for FREEZE_THAW_RETRY_MS.
 *
 * The process is a fork of the caller, which may run other threads, and
 * it does more than async-signal-safe calls: the guest agent client
 * allocates memory and parses JSON (json-c, which takes no lock). That
 * relies on glibc, whose fork() handlers leave malloc usable in the child
 * of a threaded process; the freezer takes no other lock a thread of the
 * caller might have held at the fork (no stdio stream, never log.h). It
 * closes every descriptor it does not need (a lock, a QMP connection or a
 * cache file of the agent must not outlive the agent in it; without
 * close_range(), before Linux 5.9, those below the soft RLIMIT_NOFILE)
 * and writes to stderr only when its thaw failed and nobody is left to
 * tell. freeze_end() waits for its report as long as its thaw retries
 * last, and 2 s more; a freezer that has not reported by then is reaped,
 * once it exits, by a later freeze_begin() or freeze_end(), which do not
 * wait for it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The default bound of a freeze (ferry-agent's freeze-timeout). */
#define FREEZE_DEFAULT_LIMIT_MS 10000
/* How long the guest agent may take to accept us and resync. */
#define FREEZE_CONNECT_MS 5000
/* How long the freezer keeps trying to thaw before it gives up. */
#define FREEZE_THAW_RETRY_MS 30000

struct freeze;

/* What a freeze came to, from freeze_end(). Times are the freezer's, taken
 * as the guest agent's answers arrived. */
struct freeze_report {
	/* The guest stayed frozen from freeze_begin()'s return until
	 * freeze_end() asked for the thaw: the thaw came at our request, not
	 * the limit's, and found the file systems still frozen. A cut made
	 * in between is app-consistent. */
	int held;
	int frozen_fs; /* file systems the freeze froze */
	int thawed_fs; /* file systems the thaw found frozen */
	int by_limit;  /* the limit thawed the guest before freeze_end() asked */
	/* The freeze command's run time (the guest's freeze hook and the
	 * sync of its file systems: the guest still runs meanwhile). */
	int64_t freeze_ns;
	/* The guest frozen: from the freeze's answer to the thaw's. */
	int64_t window_ns;
	/* Why not held, or what the thaw said; "" when all went well. */
	char message[256];
};

/*
 * Freezes the guest behind the guest agent socket qga_path, thawing it no
 * later than limit_ms after the freeze command went out (or
 * FREEZE_DEFAULT_LIMIT_MS for limit_ms <= 0). Returns 0 with the guest
 * frozen and *ret to pass to freeze_end(); otherwise -errno with the guest
 * not frozen (thawed again where the freeze half happened) and why[] (if
 * not NULL) saying what went wrong: -ENOENT, -ECONNREFUSED (no socket: qemu
 * is not running), -EBUSY (another client holds the guest agent),
 * -ETIMEDOUT (no guest agent answers, or the freeze outlasted the limit),
 * -EREMOTEIO (the guest refused: its hook failed, a file system cannot
 * freeze), -ENODEV (it froze no file system), or a fault injected at the
 * "freeze" site (fault.h). A crash-after fault at that site kills the
 * caller with the guest frozen, for tests of the bound.
 */
int freeze_begin(const char *qga_path, int limit_ms, struct freeze **ret, char *why,
		 size_t why_size);

/*
 * Asks the freezer to thaw now, waits for it and frees f. Fills *ret (if
 * not NULL) with what happened. Returns 0 when the guest is thawed
 * (whether or not the freeze held), -errno when the freezer could not
 * make sure of it (it goes on trying until FREEZE_THAW_RETRY_MS).
 */
int freeze_end(struct freeze *f, struct freeze_report *ret);

/* Abandons a freeze that freeze_end() will not see: the freezer thaws at
 * once (end of file) and is reaped. NULL is fine. */
void freeze_abandon(struct freeze *f);

/*
 * At an agent's start: asks the guest agent whether the guest is frozen
 * (a freezer of an agent killed together with it, say) and thaws it if
 * so. Returns 1 when it thawed a frozen guest, 0 when the guest was not
 * frozen, -errno (why[] says) when it could not ask or thaw, as for
 * freeze_begin(). Waits at most timeout_ms for a busy guest agent: a
 * previous freezer holds it until it has thawed.
 */
int freeze_recover(const char *qga_path, int timeout_ms, char *why, size_t why_size);
