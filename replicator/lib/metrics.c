/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Prometheus text format writer of metrics.h. Each family keeps its
 * samples as text lines in a buffer of its own, so samples may be added in
 * any order and still come out grouped; a new series is looked up among
 * its family's lines (a few per VM: a linear search is enough).
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/log.h"
#include "ferry/util.h"

#define MAX_LABELS 8
#define MAX_SERIES_KEY 4096

struct family {
	char *name;
	char *help;
	enum metrics_type type;
	char *lines; /* "name{...} value\n" each */
	size_t len, cap;
};

struct metrics {
	struct family *f;
	size_t n;
};

int metrics_new(struct metrics **ret)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*ret = m;
	return 0;
}

struct metrics *metrics_free(struct metrics *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n; i++) {
		free(m->f[i].name);
		free(m->f[i].help);
		free(m->f[i].lines);
	}
	free(m->f);
	free(m);
	return NULL;
}

static int name_valid(const char *s, int colons)
{
	if (!s || !*s)
		return 0;
	for (size_t i = 0; s[i]; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			 (colons && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

/* Well-formed UTF-8: no overlong forms, surrogates or code points past
 * U+10FFFF. */
static int utf8_valid(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	while (*s) {
		unsigned c = *s;
		size_t n = c < 0x80           ? 0 :
			   (c & 0xe0) == 0xc0 ? 1 :
			   (c & 0xf0) == 0xe0 ? 2 :
			   (c & 0xf8) == 0xf0 ? 3 :
						(size_t)-1;
		if (n == (size_t)-1 || (n == 1 && c < 0xc2))
			return 0;
		unsigned cp = n ? c & (0x3f >> n) : c;
		for (size_t i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		s += n + 1;
	}
	return 1;
}

static struct family *find(struct metrics *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->f[i].name, name) == 0)
			return &m->f[i];
	return NULL;
}

int metrics_declare(struct metrics *m, const char *name, enum metrics_type type, const char *help)
{
	size_t nl = name ? strlen(name) : 0;
	if (!name_valid(name, 1) || !help || !utf8_valid(help) ||
	    (type == METRICS_COUNTER && (nl < 6 || strcmp(name + nl - 6, "_total") != 0)))
		return -EINVAL;
	if (find(m, name))
		return -EEXIST;
	struct family *f = realloc(m->f, (m->n + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	m->f = f;
	f = &m->f[m->n];
	*f = (struct family){ .name = strdup(name), .help = strdup(help), .type = type };
	if (!f->name || !f->help) {
		free(f->name);
		free(f->help);
		return -ENOMEM;
	}
	m->n++;
	return 0;
}

int metrics_escape_label(const char *s, char *buf, size_t size)
{
	size_t o = 0;
	for (; *s; s++) {
		const char *e = *s == '\\' ? "\\\\" :
				*s == '"'  ? "\\\"" :
				*s == '\n' ? "\\n" :
					     NULL;
		size_t k = e ? 2 : 1;
		if (o + k >= size)
			return -ENOBUFS;
		if (e)
			memcpy(buf + o, e, 2);
		else
			buf[o] = *s;
		o += k;
	}
	if (o >= size)
		return -ENOBUFS;
	buf[o] = 0;
	return 0;
}

void metrics_format_value(double v, char *buf, size_t size)
{
	if (isnan(v)) {
		snprintf(buf, size, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* The shortest of %.15g .. %.17g that reads back as v. */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* Appends text to the family's lines. */
static int append(struct family *f, const char *text, size_t len)
{
	if (f->len + len + 1 > f->cap) {
		size_t cap = MAX(f->cap * 2, f->len + len + 1);
		cap = MAX(cap, (size_t)1024);
		char *p = realloc(f->lines, cap);
		if (!p)
			return -ENOMEM;
		f->lines = p;
		f->cap = cap;
	}
	memcpy(f->lines + f->len, text, len);
	f->len += len;
	f->lines[f->len] = 0;
	return 0;
}

/* Whether a line starting with key (name and labels) and a space is there. */
static int has_series(const struct family *f, const char *key, size_t klen)
{
	for (size_t at = 0; at < f->len;) {
		const char *nl = memchr(f->lines + at, '\n', f->len - at);
		size_t end = nl ? (size_t)(nl - f->lines) : f->len;
		if (end - at > klen && memcmp(f->lines + at, key, klen) == 0 &&
		    f->lines[at + klen] == ' ')
			return 1;
		at = end + 1;
	}
	return 0;
}

int metrics_add(struct metrics *m, const char *name, double value, ...)
{
	struct family *f = find(m, name);
	if (!f)
		return -ENOENT;
	if (f->type == METRICS_COUNTER && (isnan(value) || value < 0))
		return -EINVAL;

	char key[MAX_SERIES_KEY];
	const char *seen[MAX_LABELS];
	if (strlen(name) >= sizeof(key) / 2)
		return -ENOBUFS;
	size_t o = (size_t)snprintf(key, sizeof(key), "%s", name), nlabels = 0;
	va_list ap;
	va_start(ap, value);
	int r = 0;
	for (const char *ln; r >= 0 && (ln = va_arg(ap, const char *));) {
		const char *lv = va_arg(ap, const char *);
		if (!lv || !name_valid(ln, 0) || strncmp(ln, "__", 2) == 0 || !utf8_valid(lv) ||
		    nlabels == MAX_LABELS) {
			r = -EINVAL;
			break;
		}
		for (size_t i = 0; i < nlabels; i++)
			if (strcmp(seen[i], ln) == 0)
				r = -EINVAL;
		seen[nlabels++] = ln;
		int k = snprintf(key + o, sizeof(key) - o, "%s%s=\"", nlabels == 1 ? "{" : ",", ln);
		if (r < 0 || k < 0 || (size_t)k >= sizeof(key) - o) {
			r = r < 0 ? r : -ENOBUFS;
			break;
		}
		o += (size_t)k;
		r = metrics_escape_label(lv, key + o, sizeof(key) - o - 1);
		if (r >= 0) {
			o += strlen(key + o);
			key[o++] = '"';
			key[o] = 0;
		}
	}
	va_end(ap);
	if (r < 0)
		return r;
	if (nlabels) {
		if (o + 2 > sizeof(key))
			return -ENOBUFS;
		key[o++] = '}';
		key[o] = 0;
	}
	if (has_series(f, key, o))
		return -EEXIST;
	char v[64];
	metrics_format_value(value, v, sizeof(v));
	r = append(f, key, o);
	if (r >= 0)
		r = append(f, " ", 1);
	if (r >= 0)
		r = append(f, v, strlen(v));
	if (r >= 0)
		r = append(f, "\n", 1);
	return r;
}

/* The help text with \ and newlines escaped, onto out. */
static void put_help(FILE *out, const char *s)
{
	for (; *s; s++)
		if (*s == '\\')
			fputs("\\\\", out);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
}

int metrics_render(struct metrics *m, char **ret, size_t *ret_len)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < m->n; i++) {
		const struct family *f = &m->f[i];
		if (!f->len)
			continue; /* nothing known: no family, rather than an empty one */
		fprintf(out, "# HELP %s ", f->name);
		put_help(out, f->help);
		fprintf(out, "\n# TYPE %s %s\n", f->name,
			f->type == METRICS_COUNTER ? "counter" : "gauge");
		fwrite(f->lines, 1, f->len, out);
	}
	if (fclose(out) != 0) {
		free(text);
		return -ENOMEM;
	}
	*ret = text;
	*ret_len = len;
	return 0;
}

int metrics_write(struct metrics *m, const char *path)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = metrics_render(m, &text, &len);
	if (r < 0)
		return r;
	/* Read by the collector, which runs as another user; no secrets. */
	r = ferry_write_file_replace(path, text, len, 0644);
	if (r < 0)
		return r;
	/* The new file is in place and what a collector reads from now on;
	 * failing now would say it was not. Metrics are written again at the
	 * next pass, so one that a crash loses matters little. */
	r = ferry_fsync_parent(path);
	if (r < 0)
		log_warning_errno(r, "metrics file %s written, but its directory not synced", path);
	return 0;
}
