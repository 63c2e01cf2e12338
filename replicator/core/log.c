/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stderr logging for the programs. Kept in the core library only so every
 * program links one copy; core modules themselves never call it. Messages
 * carry names, paths and text that came from elsewhere (a disk path, a
 * qemu error, a catalog event), so control characters are escaped before
 * they reach a terminal or a log file: one message is one line.
 */
#include "ferry/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *program = "ferry";
static int max_level = LOG_INFO;

/* The last error-level message, for a program that reports it elsewhere
 * (the agent's status in the cache). */
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[1024];

void log_set_program(const char *name)
{
	program = name;
}

void log_set_max_level(int level)
{
	max_level = level;
}

/* Whether s (n bytes left) starts with a character to escape, and its
 * length: C0 controls and DEL, and the C1 controls as UTF-8 (U+0080 to
 * U+009F, which a terminal may take for an escape sequence). */
static size_t control_len(const unsigned char *s, size_t n)
{
	if (s[0] < 0x20 || s[0] == 0x7f)
		return 1;
	if (n >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
		return 2;
	return 0;
}

const char *log_escape(const char *s, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), o = 0;
	if (size == 0)
		return buf;
	for (size_t i = 0; i < n;) {
		size_t k = control_len(p + i, n - i);
		size_t need = k ? 4 * k : 1;
		if (o + need >= size)
			break;
		if (!k) {
			buf[o++] = (char)p[i++];
			continue;
		}
		for (size_t j = 0; j < k; j++, i++) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[p[i] >> 4];
			buf[o++] = hex[p[i] & 15];
		}
	}
	buf[o] = 0;
	return buf;
}

/* src into dst, cut short to fit. */
static void copy_cut(char *dst, size_t size, const char *src)
{
	if (size == 0)
		return;
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = 0;
}

void log_last_error(char *buf, size_t size)
{
	pthread_mutex_lock(&last_lock);
	copy_cut(buf, size, last_error);
	pthread_mutex_unlock(&last_lock);
}

void log_clear_last_error(void)
{
	pthread_mutex_lock(&last_lock);
	last_error[0] = 0;
	pthread_mutex_unlock(&last_lock);
}

int log_internal(int level, int error, const char *fmt, ...)
{
	/* Nothing to print and nothing to remember. */
	if (level > max_level && level > LOG_ERR)
		return error;

	char msg[2048], line[4 * sizeof(msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (error)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), ": %s",
			 strerror(error < 0 ? -error : error));
	log_escape(msg, line, sizeof(line));

	if (level <= LOG_ERR) {
		pthread_mutex_lock(&last_lock);
		copy_cut(last_error, sizeof(last_error), line);
		pthread_mutex_unlock(&last_lock);
	}
	if (level > max_level)
		return error;
	static const char *const names[] = { "emerg",   "alert",  "crit", "error",
					     "warning", "notice", "info", "debug" };
	const char *tag = level >= 0 && level <= LOG_DEBUG ? names[level] : "log";
	fprintf(stderr, "%s: %s: %s\n", program, tag, line);
	return error;
}
