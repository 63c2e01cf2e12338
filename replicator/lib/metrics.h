/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Metrics in the Prometheus text exposition format (version 0.0.4), as
 * node-exporter's textfile collector reads them: per family a # HELP and a
 * # TYPE line, then its samples, name{label="value",...} value. Families
 * are declared first and come out in that order, each with all its
 * samples together, whatever order the samples were added in (a family
 * without samples is left out). Names and
 * label names are checked against the format's grammar, label values and
 * help texts escaped; a counter's name must end in _total, and a series
 * (name and labels) may appear once. The file is replaced atomically, so
 * the collector never reads half of it.
 */
#pragma once

#include <stddef.h>

enum metrics_type {
	METRICS_GAUGE,
	METRICS_COUNTER,
};

struct metrics;

int metrics_new(struct metrics **ret);
struct metrics *metrics_free(struct metrics *m);

/* Declares a family. -EINVAL for a name outside [a-zA-Z_:][a-zA-Z0-9_:]*,
 * a counter not named *_total, or a help text that is not UTF-8; -EEXIST
 * when declared already. */
int metrics_declare(struct metrics *m, const char *name, enum metrics_type type, const char *help);
/*
 * Adds a sample to the declared family name: the labels are name, value
 * pairs ending with NULL, written in that order. -ENOENT for a family not
 * declared, -EINVAL for a label name outside [a-zA-Z_][a-zA-Z0-9_]* (or
 * starting with __), a label given twice, a value that is not UTF-8, or a
 * negative or NaN counter; -EEXIST for a series already there. NaN and
 * infinities are written as the format spells them.
 */
int metrics_add(struct metrics *m, const char *name, double value, ...) __attribute__((sentinel));

/* The whole text (malloc'd, NUL-terminated). */
int metrics_render(struct metrics *m, char **ret, size_t *ret_len);
/*
 * Writes the text to path atomically: a temporary file in the same
 * directory (named path.tmp.PID, which the textfile collector, reading
 * *.prom only, skips), mode 0644 so that the collector may read it
 * (metrics hold no secret), synced, renamed over path, and the directory
 * synced. -errno; path is then as it was. Once the rename is done it
 * returns 0: a failed sync of the directory is logged as a warning (the
 * new file is in place; a crash might bring the old one back).
 */
int metrics_write(struct metrics *m, const char *path);

/* Escapes a label value as the format wants it (\\, \", \n) into buf;
 * -ENOBUFS when it does not fit. Exposed for the tests. */
int metrics_escape_label(const char *s, char *buf, size_t size);
/* The value as the format writes it: shortest round-trip decimal, NaN,
 * +Inf, -Inf. */
void metrics_format_value(double v, char *buf, size_t size);
