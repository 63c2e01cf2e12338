/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the blobs layer's local backend: round trips, exclusive
 * puts, byte-ordered recursive listing, hostile names, missing blobs, URL
 * schemes, and the fault-injection seam (a failed put leaves nothing).
 */
#include "ferry/blobs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)

struct names {
	char buf[4096];
	unsigned n;
};

static int collect(const char *name, uint64_t size, void *ud)
{
	struct names *c = ud;
	size_t l = strlen(c->buf);
	snprintf(c->buf + l, sizeof(c->buf) - l, "%s%s:%llu", l ? " " : "", name,
		 (unsigned long long)size);
	c->n++;
	return 0;
}

static int stop_at_two(const char *name, uint64_t size, void *ud)
{
	unsigned *n = ud;
	return ++*n == 2 ? -ECANCELED : 0;
}

struct fault_state {
	int ops_left; /* fail every operation once this reaches 0 */
	unsigned calls;
};

static int fault_cb(const char *op, const char *name, void *ud)
{
	struct fault_state *f = ud;
	f->calls++;
	if (f->ops_left == 0)
		return -EIO;
	f->ops_left--;
	return 0;
}

static int count_tmp(const char *dir)
{
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "find '%s' -name '.tmp-*' | wc -l", dir) < 0)
		return -1;
	FILE *p = popen(cmd, "r");
	int n = -1;
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

int main(void)
{
	char tmpl[] = "/tmp/ferry-test-blobs-XXXXXX";
	char *dir = mkdtemp(tmpl);
	ok(dir != NULL, "mkdtemp");
	if (!dir)
		return tap_done();

	_cleanup_free_ char *root = NULL, *url = NULL;
	if (asprintf(&root, "%s/loc", dir) < 0 || asprintf(&url, "file://%s", root) < 0)
		return 1;

	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	ok(ferry_blobs_open(root, 0, &b) == -ENOENT, "open missing without create -> ENOENT");
	ok_r(ferry_blobs_open(url, 1, &b), "open file:// with create");
	if (!b)
		return tap_done();
	ok(strcmp(ferry_blobs_url(b), url) == 0, "url kept as given");
	ok(ferry_blobs_local_dir(b) && strcmp(ferry_blobs_local_dir(b), root) == 0,
	   "local_dir is the directory");

	/* URL schemes */
	struct ferry_blobs *x = NULL;
	ok(ferry_blobs_open("azblob://container", 0, &x) == -ENOKEY, "azblob without credentials");
	ok(ferry_blobs_open("azblob://Bad_Container", 0, &x) == -EINVAL, "azblob: bad container");
	ok(ferry_blobs_open("gopher://x/y", 0, &x) == -EPROTONOSUPPORT, "unknown scheme");
	ok(ferry_blobs_open("", 0, &x) == -EINVAL, "empty url -> EINVAL");
	ok(ferry_blobs_open("file://host/p", 0, &x) == -EINVAL, "file://host -> EINVAL");
	ok(x == NULL, "no object on failure");
	ok_r(ferry_blobs_open(root, 0, &x), "plain path opens the same location");
	x = ferry_blobs_free(x);

	/* round trips */
	const char hello[] = "hello, blobs";
	ok_r(ferry_blobs_put(b, "a", hello, sizeof(hello), 0), "put a");
	void *got = NULL;
	size_t glen = 0;
	ok_r(ferry_blobs_get(b, "a", &got, &glen), "get a");
	ok(got && glen == sizeof(hello) && memcmp(got, hello, glen) == 0, "get a round trips");
	free(got);
	char part[5] = { 0 };
	ok_r(ferry_blobs_get_range(b, "a", 7, part, 4), "get_range a");
	ok(memcmp(part, "blob", 4) == 0, "get_range bytes");
	ok(ferry_blobs_get_range(b, "a", 10, part, 4) == -EBADMSG, "range past end -> EBADMSG");
	uint64_t size = 0;
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == sizeof(hello), "size a");
	ok_r(ferry_blobs_put(b, "empty", "", 0, 1), "put empty blob");
	ok(ferry_blobs_get(b, "empty", &got, &glen) >= 0 && glen == 0, "get empty blob");
	free(got);

	/* replace and exclusive */
	ok_r(ferry_blobs_put(b, "a", "xyz", 3, 0), "non-exclusive put replaces");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "replaced whole");
	ok(ferry_blobs_put(b, "a", "qq", 2, 1) == -EEXIST, "exclusive put on existing -> EEXIST");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "EEXIST left blob alone");
	ok_r(ferry_blobs_put(b, "deep/er/name.x", "d", 1, 1), "exclusive put creates dirs");
	ok(ferry_blobs_put(b, "deep/er/name.x", "e", 1, 1) == -EEXIST, "exclusive in subdir");
	ok(count_tmp(root) == 0, "no temp files left behind");

	/* missing */
	ok(ferry_blobs_get(b, "nope", &got, &glen) == -ENOENT, "get missing -> ENOENT");
	ok(ferry_blobs_get_range(b, "nope", 0, part, 1) == -ENOENT, "get_range missing -> ENOENT");
	ok(ferry_blobs_size(b, "nope", &size) == -ENOENT, "size missing -> ENOENT");
	ok(ferry_blobs_size(b, "deep", &size) == -ENOENT, "a directory is not a blob");
	ok(ferry_blobs_delete(b, "nope") == 0, "delete missing is fine");
	ok(ferry_blobs_delete(b, "no/such/dir") == 0, "delete in missing dir is fine");

	/* hostile names */
	static const char *const bad[] = {
		"",     "/etc/passwd", "../x",        "a/../b",   "a/..", "..",
		".",    "a/./b",       "a//b",        "a/",       "a b",  "a\\b",
		"a\nb", "caf\xc3\xa9", ".tmp-sneaky", "d/.tmp-x", "a*",   "a:b",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ok(ferry_blobs_put(b, bad[i], "x", 1, 0) == -EINVAL, "put rejects name #%zu", i);
		ok(ferry_blobs_get_range(b, bad[i], 0, part, 1) == -EINVAL,
		   "get_range rejects name #%zu", i);
		ok(ferry_blobs_delete(b, bad[i]) == -EINVAL, "delete rejects name #%zu", i);
	}
	ok(ferry_blobs_list(b, "../", collect, &(struct names){ 0 }) == -EINVAL,
	   "list rejects ../");
	ok(ferry_blobs_list(b, "/", collect, &(struct names){ 0 }) == -EINVAL, "list rejects /");
	_cleanup_free_ char *escaped = NULL;
	struct stat st;
	if (asprintf(&escaped, "%s/x", dir) < 0)
		return 1;
	ok(stat(escaped, &st) < 0 && errno == ENOENT, "nothing escaped the location");

	/* listing: byte order across directory levels, prefix filter */
	ok_r(ferry_blobs_delete(b, "deep/er/name.x"), "delete deep");
	ok(ferry_blobs_size(b, "deep/er/name.x", &size) == -ENOENT, "deleted");
	ok_r(ferry_blobs_delete(b, "empty"), "delete empty");
	static const char *const names[] = { "s/vm1/2", "s/vm1/10", "s/vm1.b", "s/vm1/1",
					     "s/A",     "t",        "s/vm2/1", "s/_" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ok_r(ferry_blobs_put(b, names[i], names[i], strlen(names[i]), 1), "put %s",
		     names[i]);
	/* a stray temp file and a foreign name are not blobs */
	_cleanup_free_ char *stray = NULL, *foreign = NULL;
	if (asprintf(&stray, "%s/s/.tmp-123", root) < 0 ||
	    asprintf(&foreign, "%s/s/has space", root) < 0)
		return 1;
	close(open(stray, O_CREAT | O_WRONLY, 0644));
	close(open(foreign, O_CREAT | O_WRONLY, 0644));

	struct names all = { 0 };
	ok_r(ferry_blobs_list(b, "", collect, &all), "list all");
	ok(strcmp(all.buf,
		  "a:3 s/A:3 s/_:3 s/vm1.b:7 s/vm1/1:7 s/vm1/10:8 s/vm1/2:7 s/vm2/1:7 t:1") == 0,
	   "list is recursive and byte-ordered: %s", all.buf);
	struct names vm1 = { 0 };
	ok_r(ferry_blobs_list(b, "s/vm1/", collect, &vm1), "list s/vm1/");
	ok(strcmp(vm1.buf, "s/vm1/1:7 s/vm1/10:8 s/vm1/2:7") == 0, "prefix dir: %s", vm1.buf);
	struct names part1 = { 0 };
	ok_r(ferry_blobs_list(b, "s/vm1", collect, &part1), "list s/vm1 (partial component)");
	ok(strcmp(part1.buf, "s/vm1.b:7 s/vm1/1:7 s/vm1/10:8 s/vm1/2:7") == 0, "partial: %s",
	   part1.buf);
	struct names none = { 0 };
	ok_r(ferry_blobs_list(b, "zzz/", collect, &none), "list of missing dir");
	ok(none.n == 0, "missing dir lists nothing");
	unsigned seen = 0;
	ok(ferry_blobs_list(b, NULL, stop_at_two, &seen) == -ECANCELED && seen == 2,
	   "negative cb return stops the walk and is returned");

	/* fault seam */
	struct fault_state f = { .ops_left = 0 };
	ferry_blobs_set_fault(b, fault_cb, &f);
	ok(ferry_blobs_local_dir(b) == NULL, "local_dir hidden while faults are injected");
	ok(ferry_blobs_put(b, "faulty", "x", 1, 1) == -EIO, "put fails under fault");
	ok(ferry_blobs_get_range(b, "a", 0, part, 1) == -EIO, "get_range fails under fault");
	ok(ferry_blobs_delete(b, "a") == -EIO, "delete fails under fault");
	ok(ferry_blobs_list(b, "", collect, &(struct names){ 0 }) == -EIO, "list fails");
	ok(f.calls == 4, "fault consulted once per op");
	f.ops_left = 2; /* crash after two operations */
	ok_r(ferry_blobs_put(b, "f1", "1", 1, 1), "op 1 passes");
	ok_r(ferry_blobs_put(b, "f2", "2", 1, 1), "op 2 passes");
	ok(ferry_blobs_put(b, "f3", "3", 1, 1) == -EIO, "op 3 fails");
	ferry_blobs_set_fault(b, NULL, NULL);
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "faulted delete had no effect");
	ok(ferry_blobs_size(b, "faulty", &size) == -ENOENT, "faulted put left no blob");
	ok(ferry_blobs_size(b, "f3", &size) == -ENOENT, "faulted put f3 left no blob");
	ok(ferry_blobs_size(b, "f2", &size) >= 0, "f2 before the crash is there");
	ok(count_tmp(root) == 1, "only the stray temp file exists");

	_cleanup_free_ char *rm = NULL;
	if (asprintf(&rm, "rm -rf '%s'", dir) >= 0 && system(rm) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
