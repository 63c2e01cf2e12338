/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A synchronous client of the qemu guest agent (qemu-ga inside the VM),
 * reached over the host side of its virtio-serial port: the unix socket of
 * a qemu chardev (-chardev socket,path=SOCK,server=on,wait=off
 * -device virtserialport,chardev=...,name=org.qemu.guest_agent.0). For the
 * app-consistent cut (freeze.h): fsfreeze freeze, thaw and status, ping,
 * and any other command for tests.
 *
 * The agent serves one client at a time and keeps no session: what a
 * previous client sent may still be answered after it left, and a partial
 * command of its may still sit in qemu-ga's parser. So every connection,
 * and every command after one that timed out, starts with a resync: a
 * 0xFF byte (qemu-ga drops any partial input), then guest-sync-delimited
 * with a random id, whose reply qemu-ga precedes with 0xFF; everything
 * before that byte, and any reply that does not carry the id, is dropped.
 * After that, replies are matched by the command id that qemu-ga echoes.
 * The JSON stream is the QMP client's (qmp-internal.h): strict JSON,
 * bounded messages, a timeout on every wait. Nothing here prints, sleeps
 * beyond the caller's timeouts, or aborts on what the guest sends.
 *
 * A struct qga is used by one thread at a time.
 */
#pragma once

#include <stddef.h>

struct qga;
struct json_object; /* json-c */

/* Replies larger than this are refused (-EMSGSIZE). */
#define QGA_MAX_MESSAGE (1024u * 1024u)

/*
 * Connects to the guest agent's socket at path and resynchronises, all
 * within timeout_ms; timeout_ms also bounds every later command unless it
 * says otherwise. Returns -ENOENT or -ECONNREFUSED when nobody listens at
 * path (qemu is not running); -EBUSY when another client holds the agent
 * (our connection still waits in the listener's queue after timeout_ms);
 * -ETIMEDOUT when qemu accepted but no agent answered (none runs in the
 * guest, or the guest is stuck); -ECONNRESET when qemu hung up;
 * -ENAMETOOLONG for a path that does not fit a socket address; -EPROTO
 * or -EMSGSIZE when what came back is not the guest agent's protocol.
 * *ret is written only on success.
 */
int qga_connect(const char *path, int timeout_ms, struct qga **ret);

/* qga_connect() over fd, a connected SOCK_STREAM socket whose ownership is
 * taken, refusing messages over max_message bytes: for tests. */
int qga_connect_fd(int fd, int timeout_ms, size_t max_message, struct qga **ret);

/* Closes the connection and frees g (NULL is fine). Returns NULL. */
struct qga *qga_free(struct qga *g);
static inline void qga_freep(struct qga **g)
{
	qga_free(*g);
}

/*
 * Runs command with args (a JSON object or NULL; ownership taken, also on
 * failure) and waits at most timeout_ms (negative: the connection's
 * timeout) for its reply; *ret (if not NULL) gets a reference to its
 * "return" value. Resynchronises first when an earlier command timed out.
 * Returns -EREMOTEIO when the guest agent answered with an error
 * (qga_last_error() has its class and description), -ETIMEDOUT when no
 * reply came (the connection stays usable: the late reply is dropped),
 * -ECONNRESET when the socket closed, -EPROTO or -EMSGSIZE for what is not
 * a reply; after these three the connection is closed and every later call
 * returns -ENOTCONN.
 */
int qga_execute(struct qga *g, const char *command, struct json_object *args, int timeout_ms,
		struct json_object **ret);

/* guest-ping. */
int qga_ping(struct qga *g, int timeout_ms);
/* guest-fsfreeze-freeze: the guest runs its freeze hook, then freezes every
 * file system it can; *ret_count (if not NULL) gets how many it froze.
 * On an error the guest agent has thawed what it froze. */
int qga_freeze(struct qga *g, int timeout_ms, int *ret_count);
/* guest-fsfreeze-thaw: *ret_count (if not NULL) gets how many file systems
 * were frozen and are thawed now (0 when none was). */
int qga_thaw(struct qga *g, int timeout_ms, int *ret_count);
/* guest-fsfreeze-status: *ret_frozen is 1 for "frozen", 0 for "thawed".
 * -EPROTO for another answer. */
int qga_frozen(struct qga *g, int timeout_ms, int *ret_frozen);

/*
 * What went wrong in the last call on g that failed: the guest agent's
 * error class and description for -EREMOTEIO ("GenericError: ..."), a
 * short explanation otherwise; control characters escaped, bounded. ""
 * after a call that succeeded. Valid until the next call on g.
 */
const char *qga_last_error(const struct qga *g);
