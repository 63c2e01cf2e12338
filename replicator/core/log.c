/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stderr logging for the programs. Kept in the core library only so every
 * program links one copy; core modules themselves never call it.
 */
#include "ferry/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *program = "ferry";
static int max_level = LOG_INFO;

void log_set_program(const char *name)
{
	program = name;
}
void log_set_max_level(int level)
{
	max_level = level;
}
int log_internal(int level, int error, const char *fmt, ...)
{
	if (level > max_level)
		return error;

	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	static const char *const names[] = { "emerg",   "alert",  "crit", "error",
					     "warning", "notice", "info", "debug" };
	const char *tag = level >= 0 && level <= LOG_DEBUG ? names[level] : "log";
	if (error)
		fprintf(stderr, "%s: %s: %s: %s\n", program, tag, msg,
			strerror(error < 0 ? -error : error));
	else
		fprintf(stderr, "%s: %s: %s\n", program, tag, msg);
	return error;
}
