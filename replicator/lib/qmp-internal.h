/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client's entry below qmp_connect(), for its fuzz target and unit
 * test: it runs the whole client (greeting, capabilities, replies, events)
 * over any connected stream socket, a socketpair whose other end plays
 * qemu, with a message bound small enough to reach. Internal to qmp.c
 * otherwise.
 */
#pragma once

#include <stddef.h>

struct qmp;

/*
 * qmp_connect() over fd, a connected SOCK_STREAM socket whose ownership is
 * taken (it is closed on failure too), refusing messages over max_message
 * bytes. The ids of the commands are 1 (qmp_capabilities), 2, 3, ... in the
 * order they are sent, so that a script can answer them.
 */
int qmp_connect_fd(int fd, int timeout_ms, size_t max_message, struct qmp **ret);
