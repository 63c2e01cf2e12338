/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Prometheus text format writer (replicator/lib/metrics.h): families
 * come out in declaration order with their samples together, HELP texts
 * and label values escaped as the format says, values written as the
 * shortest decimal that reads back (and NaN, +Inf, -Inf); names, label
 * names, counters without _total, duplicate series, duplicate labels,
 * invalid UTF-8 and negative counters refused; the file replaced
 * atomically with mode 0644 whatever the umask, no temporary file left
 * behind, an unwritable directory or a failed sync of the file leaving the
 * old file as it was, and a failed sync of the directory after the rename
 * no failure (the new file is in place).
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/fault.h"
#include "ferry/util.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test-metrics-XXXXXX";

DEFINE_TRIVIAL_CLEANUP_FUNC(struct metrics *, metrics_free)

static void test_escape(void)
{
	char buf[64];
	ok(metrics_escape_label("a\\b\"c\nd", buf, sizeof(buf)) == 0 &&
		   strcmp(buf, "a\\\\b\\\"c\\nd") == 0,
	   "label escaping: %s", buf);
	ok(metrics_escape_label("tab\there", buf, sizeof(buf)) == 0 &&
		   strcmp(buf, "tab\there") == 0,
	   "other characters as they are");
	ok(metrics_escape_label("\"\"\"", buf, 6) == -ENOBUFS, "too small is -ENOBUFS");
	ok(metrics_escape_label("\"\"\"", buf, 7) == 0 && strlen(buf) == 6, "just fits");

	char v[64];
	metrics_format_value(0.1, v, sizeof(v));
	ok(strcmp(v, "0.1") == 0, "0.1 -> %s", v);
	metrics_format_value(1796609207.8406382, v, sizeof(v));
	ok(strtod(v, NULL) == 1796609207.8406382, "a timestamp reads back: %s", v);
	metrics_format_value(18446744073709551615.0, v, sizeof(v));
	ok(strtod(v, NULL) == 18446744073709551615.0, "2^64 reads back: %s", v);
	metrics_format_value(42, v, sizeof(v));
	ok(strcmp(v, "42") == 0, "integers plain: %s", v);
	metrics_format_value(NAN, v, sizeof(v));
	ok(strcmp(v, "NaN") == 0, "NaN");
	metrics_format_value(INFINITY, v, sizeof(v));
	ok(strcmp(v, "+Inf") == 0, "+Inf");
	metrics_format_value(-INFINITY, v, sizeof(v));
	ok(strcmp(v, "-Inf") == 0, "-Inf");
}

static void test_render(void)
{
	_cleanup_(metrics_freep) struct metrics *m = NULL;
	ok_r(metrics_new(&m), "new");
	ok_r(metrics_declare(m, "ferry_lag_seconds", METRICS_GAUGE, "Lag.\nSecond \\ line."),
	     "declare a gauge");
	ok_r(metrics_declare(m, "ferry_bytes_total", METRICS_COUNTER, "Bytes."),
	     "declare a counter");
	ok_r(metrics_declare(m, "ferry_empty", METRICS_GAUGE, "Never sampled."),
	     "declare a family left empty");
	ok(metrics_declare(m, "ferry_lag_seconds", METRICS_GAUGE, "Again.") == -EEXIST,
	   "declared twice: -EEXIST");
	ok(metrics_declare(m, "ferry_bytes", METRICS_COUNTER, "x") == -EINVAL,
	   "a counter without _total refused");
	ok(metrics_declare(m, "9lives", METRICS_GAUGE, "x") == -EINVAL &&
		   metrics_declare(m, "a-b", METRICS_GAUGE, "x") == -EINVAL &&
		   metrics_declare(m, "", METRICS_GAUGE, "x") == -EINVAL &&
		   metrics_declare(m, "ok_name", METRICS_GAUGE, "\xff") == -EINVAL,
	   "bad names and help refused");
	ok_r(metrics_declare(m, "ns:sub_name", METRICS_GAUGE, "Colons are fine."),
	     "colons in a metric name");

	ok_r(metrics_add(m, "ferry_lag_seconds", 1.5, "vm", "web-1", NULL), "add a sample");
	ok_r(metrics_add(m, "ferry_bytes_total", 1024, "vm", "web-1", "kind", "a\"b", NULL),
	     "add a counter with two labels");
	ok_r(metrics_add(m, "ferry_lag_seconds", 2, "vm", "db\\1", NULL),
	     "a gauge sample after another family's");
	ok_r(metrics_add(m, "ns:sub_name", 7, NULL), "no labels");
	ok(metrics_add(m, "ferry_lag_seconds", 3, "vm", "web-1", NULL) == -EEXIST,
	   "the same series twice: -EEXIST");
	ok_r(metrics_add(m, "ferry_lag_seconds", 3, "vm", "web-12", NULL),
	     "a series that extends another's label value");
	ok(metrics_add(m, "ferry_nope", 1, NULL) == -ENOENT, "undeclared: -ENOENT");
	ok(metrics_add(m, "ferry_lag_seconds", 1, "vm", "x", "vm", "y", NULL) == -EINVAL,
	   "a label twice refused");
	ok(metrics_add(m, "ferry_lag_seconds", 1, "__name", "x", NULL) == -EINVAL &&
		   metrics_add(m, "ferry_lag_seconds", 1, "a:b", "x", NULL) == -EINVAL &&
		   metrics_add(m, "ferry_lag_seconds", 1, "1a", "x", NULL) == -EINVAL,
	   "reserved and bad label names refused");
	ok(metrics_add(m, "ferry_lag_seconds", 1, "vm", "\xc0\xaf", NULL) == -EINVAL &&
		   metrics_add(m, "ferry_lag_seconds", 1, "vm", "\xed\xa0\x80", NULL) == -EINVAL &&
		   metrics_add(m, "ferry_lag_seconds", 1, "vm", "\xe2\x82", NULL) == -EINVAL,
	   "overlong, surrogate and cut UTF-8 refused");
	ok_r(metrics_add(m, "ferry_lag_seconds", 1, "vm", "caf\xc3\xa9", NULL),
	     "UTF-8 label values taken");
	ok(metrics_add(m, "ferry_bytes_total", -1, "vm", "z", NULL) == -EINVAL &&
		   metrics_add(m, "ferry_bytes_total", NAN, "vm", "z", NULL) == -EINVAL,
	   "negative or NaN counters refused");

	char *text = NULL;
	size_t len = 0;
	ok_r(metrics_render(m, &text, &len), "render");
	const char *want = "# HELP ferry_lag_seconds Lag.\\nSecond \\\\ line.\n"
			   "# TYPE ferry_lag_seconds gauge\n"
			   "ferry_lag_seconds{vm=\"web-1\"} 1.5\n"
			   "ferry_lag_seconds{vm=\"db\\\\1\"} 2\n"
			   "ferry_lag_seconds{vm=\"web-12\"} 3\n"
			   "ferry_lag_seconds{vm=\"caf\xc3\xa9\"} 1\n"
			   "# HELP ferry_bytes_total Bytes.\n"
			   "# TYPE ferry_bytes_total counter\n"
			   "ferry_bytes_total{vm=\"web-1\",kind=\"a\\\"b\"} 1024\n"
			   "# HELP ns:sub_name Colons are fine.\n"
			   "# TYPE ns:sub_name gauge\n"
			   "ns:sub_name 7\n";
	int same = text && strcmp(text, want) == 0 && len == strlen(want);
	ok(same, "rendered as expected (%zu bytes)", len);
	/* A TAP description is one line: the text goes below, as comments. */
	for (const char *p = text ? text : "(null)"; !same && *p;) {
		size_t n = strcspn(p, "\n");
		printf("#   | %.*s\n", (int)n, p);
		p += n + (p[n] == '\n');
	}
	free(text);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_write(void)
{
	_cleanup_(metrics_freep) struct metrics *m = NULL;
	char path[256], text[256];
	snprintf(path, sizeof(path), "%s/ferry.prom", tmpdir);
	if (metrics_new(&m) < 0 || metrics_declare(m, "x_total", METRICS_COUNTER, "X.") < 0 ||
	    metrics_add(m, "x_total", 1, NULL) < 0)
		abort();
	mode_t old = umask(077);
	ok_r(metrics_write(m, path), "write");
	umask(old);
	struct stat st;
	ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0644, "mode 0644 under umask 077 (%o)",
	   st.st_mode & 07777);
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
	if (f)
		fclose(f);
	text[n] = 0;
	ok(strcmp(text, "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n") == 0,
	   "its content");
	ok(count_entries(tmpdir) == 1, "no temporary file left");

	/* Replaced whole. */
	_cleanup_(metrics_freep) struct metrics *m2 = NULL;
	if (metrics_new(&m2) < 0 || metrics_declare(m2, "y", METRICS_GAUGE, "Y.") < 0 ||
	    metrics_add(m2, "y", 2, NULL) < 0)
		abort();
	ok_r(metrics_write(m2, path), "write again");
	f = fopen(path, "r");
	n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
	if (f)
		fclose(f);
	text[n] = 0;
	ok(strcmp(text, "# HELP y Y.\n# TYPE y gauge\ny 2\n") == 0, "replaced");

	/* A directory it cannot write: an error, the old file as it was. As
	 * root the mode does not stop anybody, so a missing directory. */
	char bad[300];
	snprintf(bad, sizeof(bad), "%s/missing/ferry.prom", tmpdir);
	ok(metrics_write(m, bad) == -ENOENT, "a missing directory: -ENOENT");
	if (geteuid() != 0) {
		chmod(tmpdir, 0500);
		ok(metrics_write(m, path) == -EACCES, "a read-only directory: -EACCES");
		chmod(tmpdir, 0700);
		f = fopen(path, "r");
		n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
		if (f)
			fclose(f);
		text[n] = 0;
		ok(strcmp(text, "# HELP y Y.\n# TYPE y gauge\ny 2\n") == 0, "the old file kept");
	}
	ok(count_entries(tmpdir) == 1, "still no temporary file");

	/* Once renamed, the file is in place: a failed sync of the directory
	 * (the second fsync) is no failure; the file's own (the first) is. */
	if (ferry_fault_supported()) {
		ok(ferry_fault_plan("fsync:eio@2") == 0, "fault plan fsync:eio@2");
		ok(metrics_write(m, path) == 0, "the directory's sync fails after the rename: 0");
		ferry_fault_plan(NULL);
		f = fopen(path, "r");
		n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
		if (f)
			fclose(f);
		text[n] = 0;
		ok(strcmp(text, "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n") == 0,
		   "and the new file is there");
		ok(ferry_fault_plan("fsync:eio@1") == 0, "fault plan fsync:eio@1");
		ok(metrics_write(m2, path) == -EIO, "the file's own sync fails: -EIO");
		ferry_fault_plan(NULL);
		f = fopen(path, "r");
		n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
		if (f)
			fclose(f);
		text[n] = 0;
		ok(strcmp(text, "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n") == 0 &&
			   count_entries(tmpdir) == 1,
		   "the old file kept, no temporary file");
	}
	unlink(path);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot make a temporary directory\n");
		return 77;
	}
	test_escape();
	test_render();
	test_write();
	rmdir(tmpdir);
	return tap_done();
}
