/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A synchronous client of the QEMU Machine Protocol, for the `qemu` change
 * tracker: it talks to a running qemu or qemu-storage-daemon over the unix
 * socket of a QMP monitor (dirty bitmaps, the fleecing transaction, NBD
 * exports). One command is in flight at a time; every command carries an id,
 * so a reply that arrives after its caller gave up is recognised and dropped
 * rather than taken for the reply to the next command. Asynchronous events
 * that arrive meanwhile are remembered (the last QMP_EVENTS_KEPT) for
 * qmp_wait_event(). Nothing here prints, sleeps beyond the caller's timeout,
 * or aborts on what qemu sends.
 *
 * A monitor serves one client at a time. qemu 7.2 listens with a backlog of
 * one and does not accept() a second client while the first is connected:
 * the second one's connect() succeeds (the kernel queues it), but no
 * greeting comes until the first client leaves, then qemu accepts it and
 * runs whatever it had sent. When the queue is full (two waiting), connect()
 * fails with EAGAIN. qmp_connect() reports both as -EBUSY.
 *
 * A struct qmp is used by one thread at a time.
 */
#pragma once

struct qmp;
struct json_object; /* json-c */

/* Replies and events larger than this are refused (-EMSGSIZE). */
#define QMP_MAX_MESSAGE (16u * 1024u * 1024u)
/* Events remembered for qmp_wait_event(); older ones are dropped. */
#define QMP_EVENTS_KEPT 16

/*
 * Connects to the QMP monitor listening on the unix socket at path, reads
 * its greeting and negotiates capabilities (none: no out-of-band commands).
 * timeout_ms bounds this and, for the connection's lifetime, every later
 * wait for a reply; a negative value waits forever.
 *
 * Returns -ENOENT or -ECONNREFUSED when nobody listens at path; -EBUSY when
 * the monitor serves another client (the listener's queue is full, or after
 * timeout_ms our connection still waits in it, unaccepted); -ETIMEDOUT when
 * qemu accepted the connection but sent no greeting in time; -EPROTO when
 * what it sent is no QMP greeting or capabilities were refused;
 * -ECONNRESET when it hung up; -EMSGSIZE for a greeting over
 * QMP_MAX_MESSAGE; -ENAMETOOLONG for a path that does not fit a socket
 * address. *ret is written only on success.
 */
int qmp_connect(const char *path, int timeout_ms, struct qmp **ret);

/* Closes the connection and frees q (NULL is fine). Returns NULL. */
struct qmp *qmp_free(struct qmp *q);
/* For _cleanup_(qmp_freep). */
static inline void qmp_freep(struct qmp **q)
{
	qmp_free(*q);
}

/*
 * Runs command with args (a JSON object, or NULL for none; ownership is
 * taken, also on failure) and waits for its reply. On success, if ret is not
 * NULL, *ret holds a reference to the reply's "return" value (put it with
 * json_object_put(); it may be NULL when qemu returned JSON null).
 *
 * Returns -EREMOTEIO when qemu answered with an error: qmp_last_error()
 * then reads "Class: description". -ETIMEDOUT when no reply came within
 * the connection's timeout: the connection stays usable (a late reply is
 * dropped by its id), unless the command itself could not be sent in full.
 * -ECONNRESET when qemu closed the connection (it may have quit or
 * restarted: connect again); -EPROTO when it sent something that is not
 * QMP (not JSON, not an object, an HMP reply that is no string);
 * -EMSGSIZE for a reply or event over QMP_MAX_MESSAGE. After these three,
 * and after a timeout while sending, the connection is closed and every
 * later call returns -ENOTCONN. -EINVAL when args is not an object.
 */
int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		struct json_object **ret);

/*
 * Like qmp_execute(), with args parsed from the JSON text that args_fmt and
 * the arguments that follow print, or no args when args_fmt is NULL. For
 * fixed shapes only: the values printed with %s are not escaped, so callers
 * pass nothing but validated node and bitmap names. -EINVAL when the text is
 * not a JSON object.
 */
int qmp_executef(struct qmp *q, struct json_object **ret, const char *command, const char *args_fmt,
		 ...) __attribute__((format(printf, 4, 5)));

/*
 * Runs command_line on the human monitor (human-monitor-command), for
 * tests. On success *ret_output (if not NULL) gets its output, a new string
 * that the caller frees. HMP reports its errors in that output, not as a
 * QMP error. Errors as for qmp_execute().
 */
int qmp_hmp(struct qmp *q, const char *command_line, char **ret_output);

/*
 * Waits for the event called name (e.g. "BLOCK_JOB_COMPLETED"): takes the
 * oldest remembered one of that name, or else reads until one arrives,
 * remembering the others, for at most timeout_ms (0: only what has arrived;
 * negative: forever). On success *ret (if not NULL) gets the whole event
 * object ("event", "data", "timestamp"), which the caller puts. Each event
 * is returned once, remembered ones also after the connection closed.
 * -ETIMEDOUT when none came; other errors as for qmp_execute().
 */
int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, struct json_object **ret);

/* Forgets the remembered events, so that a following qmp_wait_event()
 * returns only one that arrives after this call (a job's own completion,
 * not an earlier job's). */
void qmp_clear_events(struct qmp *q);

/*
 * What went wrong in the last call on q that failed: qemu's error class and
 * description for -EREMOTEIO ("GenericError: Bitmap 'x' not found"), a
 * short explanation otherwise. Control characters are escaped (\xNN); the
 * text is bounded. "" when the last call succeeded. Valid until the next
 * call on q.
 */
const char *qmp_last_error(const struct qmp *q);

/* The connection's socket, for a helper process that must be able to speak
 * on it when this process cannot (pausewd.h); -1 once closed. */
int qmp_fd(const struct qmp *q);
