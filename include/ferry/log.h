/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Logging for the programs (the core library never logs): one line per
 * message on stderr, at syslog levels, prefixed with the program name.
 * log_*_errno(r, ...) append strerror(-r) and return r, so error paths read
 * "return log_error_errno(r, "...");".
 */
#pragma once

#include <syslog.h>

void log_set_program(const char *name);
void log_set_max_level(int level);
int log_internal(int level, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(r, ...) log_internal(LOG_DEBUG, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_internal(LOG_WARNING, (r), __VA_ARGS__)
#define log_error_errno(r, ...) log_internal(LOG_ERR, (r), __VA_ARGS__)
