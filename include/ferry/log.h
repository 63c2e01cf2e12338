/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Logging for the programs (the core library never logs): one line per
 * message on stderr, at syslog levels, prefixed with the program name.
 * log_*_errno(r, ...) append strerror(-r) and return r, so error paths read
 * "return log_error_errno(r, "...");".
 */
#pragma once

#include <stddef.h>
#include <syslog.h>

void log_set_program(const char *name);
void log_set_max_level(int level);
int log_internal(int level, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * s into buf (size bytes, always NUL-terminated, cut short rather than
 * overrun) with every control character written as \xHH: C0 controls,
 * DEL, and C1 controls encoded as UTF-8. Every message logged goes
 * through it; programs use it for text they print from elsewhere (catalog
 * events, an agent's status). Returns buf.
 */
const char *log_escape(const char *s, char *buf, size_t size);

/* The last message logged at LOG_ERR or worse, escaped and with its errno
 * text, whatever the max level ("" when none since the last clear): what
 * a failed step said, for a program that reports it elsewhere. */
void log_last_error(char *buf, size_t size);
void log_clear_last_error(void);

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(r, ...) log_internal(LOG_DEBUG, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_internal(LOG_WARNING, (r), __VA_ARGS__)
#define log_error_errno(r, ...) log_internal(LOG_ERR, (r), __VA_ARGS__)
