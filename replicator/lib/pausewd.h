/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bound on how long the agent keeps a VM paused (QMP stop) for a group
 * cut, that holds even when the agent dies or hangs: a small child process
 * shares the agent's QMP connection (a monitor serves one client, so a
 * second connection could not get in) and sends `cont` on it if the agent
 * has not said "done" by the deadline, or as soon as the agent is gone (its
 * end of a pipe closes, SIGKILL included). qemu answers that `cont` with the
 * child's own id, which the agent's QMP client drops as a stray reply; the
 * child waits for that answer before it leaves, since qemu drops what a
 * client sent and it has not run yet when the client goes away.
 */
#pragma once

struct pausewd;

/* Starts the watchdog over the connected QMP socket qmp_fd, to resume the
 * VM limit_ms from now unless pausewd_finish() comes first. Start it
 * before the stop. */
int pausewd_start(int qmp_fd, int limit_ms, struct pausewd **ret);

/*
 * Tells the watchdog it is no longer needed and reaps it. Returns 1 when it
 * never resumed the VM (so the VM stayed paused from the stop until now, as
 * far as the watchdog goes), 0 when it did (the deadline passed first:
 * whatever was cut after the deadline saw a running VM), -errno when its
 * fate is unknown (treat as 0). Frees w (NULL: returns 0).
 */
int pausewd_finish(struct pausewd *w);

/* Lets the watchdog do its job (the agent could not resume the VM): frees
 * w and closes its end without a word, so the child resumes the VM at
 * once, as if the agent had died. Nobody waits for the child: it stays a
 * zombie until the agent exits. */
void pausewd_finish_later(struct pausewd *w);
