/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client's entry below qmp_connect(), for its fuzz target and unit
 * test: it runs the whole client (greeting, capabilities, replies, events)
 * over any connected stream socket, a socketpair whose other end plays
 * qemu, with a message bound small enough to reach; and the JSON stream
 * beneath it, which the guest agent client (qga.c) shares. Internal to
 * qmp.c and qga.c otherwise.
 */
#pragma once

#include <stddef.h>

struct qmp;
struct json_object; /* json-c */

/*
 * qmp_connect() over fd, a connected SOCK_STREAM socket whose ownership is
 * taken (it is closed on failure too), refusing messages over max_message
 * bytes. The ids of the commands are 1 (qmp_capabilities), 2, 3, ... in the
 * order they are sent, so that a script can answer them.
 */
int qmp_connect_fd(int fd, int timeout_ms, size_t max_message, struct qmp **ret);
/* A connected, non-blocking unix stream socket to path (qemu's monitor or
 * guest agent socket), or -errno: -EBUSY when the listener's queue is full
 * (the server serves another client). */
int qmp_unix_connect(const char *path);

/*
 * The JSON stream under the client, for the guest agent client (qga.c):
 * qemu-ga speaks the same JSON over a socket, without greeting or
 * capabilities, and echoes command ids, but a client resynchronises on a
 * delimiter byte first. On a struct qmp from qmp_open_stream(),
 * qmp_execute() and qmp_last_error() work as for QMP (ids 1, 2, ...), with
 * these beside them. Each error closes the connection as qmp_execute()'s
 * do, but for -ETIMEDOUT.
 */
/* Takes fd (a connected SOCK_STREAM socket; closed on failure too) as it
 * is: reads nothing. */
int qmp_open_stream(int fd, int timeout_ms, size_t max_message, struct qmp **ret);
/* The bound of every later wait for a reply (negative: forever). */
void qmp_set_timeout(struct qmp *q, int timeout_ms);
/* Sends len bytes as they are, within the connection's timeout. */
int qmp_send_raw(struct qmp *q, const void *buf, size_t len);
/* Makes delim a byte that cuts the stream for good (qemu-ga's 0xFF, which
 * is no JSON and no UTF-8): the parser never sees it, and a message it
 * interrupts is dropped, so a message followed by delim in one read is
 * still taken whole. Without it (QMP) such a byte is malformed JSON. */
void qmp_set_delimiter(struct qmp *q, unsigned char delim);
/* Discards what was received or arrives, up to and including the first
 * byte delim, within timeout_ms; the next message starts after it. */
int qmp_skip_past(struct qmp *q, unsigned char delim, int timeout_ms);
/* The next message, whatever it is (a JSON object), within timeout_ms. */
int qmp_read_object(struct qmp *q, int timeout_ms, struct json_object **ret);
/* Whether the connection still waits in the listener's accept queue (its
 * server serves another client): 1, 0, or -errno when the kernel cannot
 * tell. */
int qmp_queued(const struct qmp *q);
