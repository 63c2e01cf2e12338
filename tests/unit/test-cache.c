/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache on a local directory: segment put/list/get/delete, exclusive
 * puts, junk names ignored by listings, the ack round trip and its damage
 * handling (every flipped byte, every truncation), and the pure name and
 * ack codecs from cache-internal.h.
 */
#include "ferry/cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache-internal.h"
#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_cache *, ferry_cache_free);

static char tmpdir[] = "/tmp/test-cache-XXXXXX";

static void rm_rf(const char *path)
{
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "rm -rf '%s'", path) < 0)
		abort();
	if (system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", path);
}

static void touch(const char *rel, const char *content)
{
	_cleanup_free_ char *p = NULL;
	if (asprintf(&p, "%s/c/%s", tmpdir, rel) < 0)
		abort();
	_cleanup_free_ char *d = strdup(p);
	*strrchr(d, '/') = 0;
	ferry_mkdir_p(d, 0755);
	if (ferry_write_file_atomic(p, content, strlen(content)) < 0)
		abort();
}

static void test_names(void)
{
	char n[128];
	uint64_t seq;
	ok(cache_segment_name("vm1", 0x1a, n, sizeof(n)) == 0 &&
		   strcmp(n, "segments/vm1/000000000000001a.seg") == 0,
	   "segment name");
	ok(cache_segment_name("vm1", 0, n, sizeof(n)) == -EINVAL, "seq 0 has no name");
	ok(cache_segment_name("a/b", 1, n, sizeof(n)) == -EINVAL, "invalid vm has no name");
	ok(cache_segment_name("vm1", UINT64_MAX, n, sizeof(n)) == 0 &&
		   cache_segment_name_parse(n, "vm1", &seq) == 0 && seq == UINT64_MAX,
	   "largest seq round trip");
	ok(cache_segment_name_parse("segments/vm1/000000000000001a.seg", "vm1", &seq) == 0 &&
		   seq == 0x1a,
	   "name parse");
	const char *junk[] = {
		"segments/vm1/000000000000001A.seg",
		"segments/vm1/00000000000001a.seg",
		"segments/vm1/0000000000000001a.seg",
		"segments/vm1/000000000000001a.seg.tmp",
		"segments/vm1/000000000000001a",
		"segments/vm1/0000000000000000.seg",
		"segments/vm10/000000000000001a.seg",
		"segments/vm/000000000000001a.seg",
		"segments/vm1/x/000000000000001a.seg",
		"segments/vm1/+00000000000001a.seg",
		"segments/vm1/ 00000000000001a.seg",
		"acks/vm1.ack",
		"",
	};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_SIZE(junk); i++)
		if (cache_segment_name_parse(junk[i], "vm1", &seq) != -EINVAL) {
			printf("# accepted %s\n", junk[i]);
			bad++;
		}
	ok(bad == 0, "junk names refused");
}

static void test_ack_codec(void)
{
	uint8_t buf[CACHE_ACK_MAX];
	size_t len;
	struct ferry_ack a = { .seq = 42 }, b;
	ferry_sha256("seg", 3, &a.digest);
	ok_r(cache_ack_format("vm-7", &a, buf, sizeof(buf), &len), "format ack");
	ok(len == CACHE_ACK_LEN(4), "ack length");
	ok(cache_ack_parse(buf, len, "vm-7", &b) == 0 && b.seq == 42 &&
		   ferry_id_equal(&a.digest, &b.digest),
	   "parse ack");
	ok(cache_ack_parse(buf, len, NULL, &b) == 0, "parse ack for any vm");
	ok(cache_ack_parse(buf, len, "vm-8", &b) == -EBADMSG, "ack of another vm is -EBADMSG");

	int bad = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x20;
		struct ferry_ack x = { .seq = 999 };
		if (cache_ack_parse(buf, len, "vm-7", &x) != -EBADMSG || x.seq != 999)
			bad++;
		buf[i] ^= 0x20;
	}
	ok(bad == 0, "every flipped byte of the ack is -EBADMSG (%d not)", bad);
	bad = 0;
	for (size_t n = 0; n < len; n++)
		if (cache_ack_parse(buf, n, "vm-7", &b) != -EBADMSG)
			bad++;
	ok(bad == 0, "every truncated ack is -EBADMSG (%d not)", bad);

	/* An unknown major with a good checksum is a version, not damage. */
	put_le16(buf + 8, 2);
	struct ferry_id sum;
	ferry_sha256(buf, len - 32, &sum);
	memcpy(buf + len - 32, sum.b, 32);
	ok(cache_ack_parse(buf, len, "vm-7", &b) == -EPROTONOSUPPORT, "ack major 2");

	struct ferry_ack z = { 0 }, inconsistent = { .seq = 0 };
	ok_r(cache_ack_format("vm-7", &z, buf, sizeof(buf), &len), "seq 0 ack formats");
	inconsistent.digest.b[0] = 1;
	ok(cache_ack_format("vm-7", &inconsistent, buf, sizeof(buf), &len) == -EINVAL,
	   "seq 0 with a digest refused");
	ok(cache_ack_format("vm-7", &(struct ferry_ack){ .seq = 3 }, buf, sizeof(buf), &len) ==
		   -EINVAL,
	   "seq 3 without a digest refused");
	ok(cache_ack_format("bad name", &z, buf, sizeof(buf), &len) == -EINVAL, "bad vm refused");
	ok(cache_ack_format("vm-7", &a, buf, 10, &len) == -ENOBUFS, "small buffer refused");
}

static void test_cache(void)
{
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s/c", tmpdir) < 0)
		abort();
	struct ferry_cache *none = NULL;
	ok(ferry_cache_open(url, 0, &none) < 0 && none == NULL,
	   "open missing cache without create");

	_cleanup_(ferry_cache_freep) struct ferry_cache *c = NULL;
	ok_r(ferry_cache_open(url, 1, &c), "open cache with create");
	if (!c)
		return;
	ok(ferry_cache_url(c) && strstr(ferry_cache_url(c), tmpdir), "url");

	uint64_t *seqs = NULL;
	size_t n = 99;
	uint64_t bytes = 99;
	ok(ferry_cache_list_segments(c, "vm1", &seqs, &n, &bytes) == 0 && n == 0 && bytes == 0,
	   "empty cache lists nothing");
	free(seqs);

	struct ferry_ack a = { .seq = 77 };
	ok(ferry_cache_get_ack(c, "vm1", &a) == 0 && a.seq == 0 && ferry_id_is_null(&a.digest),
	   "missing ack is seq 0");

	ok_r(ferry_cache_put_segment(c, "vm1", 2, "two", 3), "put seq 2");
	ok_r(ferry_cache_put_segment(c, "vm1", 1, "one!", 4), "put seq 1");
	ok_r(ferry_cache_put_segment(c, "vm1", 0x100, "x", 1), "put seq 0x100");
	ok_r(ferry_cache_put_segment(c, "vm10", 5, "other vm", 8), "put other vm");
	ok(ferry_cache_put_segment(c, "vm1", 2, "again", 5) == -EEXIST, "exclusive put is -EEXIST");
	ok(ferry_cache_put_segment(c, "vm1", 0, "z", 1) == -EINVAL, "seq 0 refused");
	ok(ferry_cache_put_segment(c, "../x", 1, "z", 1) == -EINVAL, "bad vm refused");

	touch("segments/vm1/junk", "j");
	touch("segments/vm1/000000000000000G.seg", "j");
	touch("segments/vm1/0000000000000000.seg", "j");
	touch("segments/vm1/00000000000000FF.seg", "j");
	touch("segments/vm1/0000000000000003.seg.part", "j");
	touch("segments/vm1/sub/0000000000000004.seg", "j");
	touch("segments/vm1/.hidden", "j");

	ok_r(ferry_cache_list_segments(c, "vm1", &seqs, &n, &bytes), "list");
	ok(n == 3 && seqs[0] == 1 && seqs[1] == 2 && seqs[2] == 0x100,
	   "ascending seqs, junk ignored");
	ok(bytes == 8, "bytes sum (%" PRIu64 ")", bytes);
	free(seqs);

	void *buf = NULL;
	size_t len = 0;
	ok(ferry_cache_get_segment(c, "vm1", 1, &buf, &len) == 0 && len == 4 &&
		   memcmp(buf, "one!", 4) == 0,
	   "get seq 1");
	free(buf);
	ok(ferry_cache_get_segment(c, "vm1", 3, &buf, &len) == -ENOENT, "missing segment -ENOENT");
	ok(ferry_cache_get_segment(c, "vm1", 2, &buf, &len) == 0 && len == 3 &&
		   memcmp(buf, "two", 3) == 0,
	   "exclusive put kept the first content");
	free(buf);

	/* The replicator's step: apply, ack, delete. */
	struct ferry_ack ack = { .seq = 1 };
	ferry_sha256("one!", 4, &ack.digest);
	ok_r(ferry_cache_put_ack(c, "vm1", &ack), "put ack 1");
	ok_r(ferry_cache_delete_segment(c, "vm1", 1), "delete seq 1");
	ok_r(ferry_cache_delete_segment(c, "vm1", 1), "delete is idempotent");
	ok(ferry_cache_get_ack(c, "vm1", &a) == 0 && a.seq == 1 &&
		   ferry_id_equal(&a.digest, &ack.digest),
	   "ack round trip");
	ack.seq = 2;
	ok_r(ferry_cache_put_ack(c, "vm1", &ack), "ack replaced whole");
	ok(ferry_cache_get_ack(c, "vm1", &a) == 0 && a.seq == 2, "newer ack read");
	ok(ferry_cache_get_ack(c, "vm10", &a) == 0 && a.seq == 0, "other vm has no ack");
	ok(ferry_cache_put_ack(c, "vm1", &(struct ferry_ack){ .seq = 5 }) == -EINVAL,
	   "ack without digest refused");

	ok_r(ferry_cache_list_segments(c, "vm1", &seqs, &n, NULL), "list after delete");
	ok(n == 2 && seqs[0] == 2 && seqs[1] == 0x100, "deleted segment gone");
	free(seqs);

	/* A damaged ack, and one copied from another VM. */
	touch("acks/vm2.ack", "FERRYACK but not really");
	ok(ferry_cache_get_ack(c, "vm2", &a) == -EBADMSG, "damaged ack is -EBADMSG");
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "cp %s/c/acks/vm1.ack %s/c/acks/vm3.ack", tmpdir, tmpdir) < 0)
		abort();
	ok(system(cmd) == 0, "copy ack");
	ok(ferry_cache_get_ack(c, "vm3", &a) == -EBADMSG, "another vm's ack is -EBADMSG");
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot make a temporary directory\n");
		return 77;
	}
	test_names();
	test_ack_codec();
	test_cache();
	rm_rf(tmpdir);
	return tap_done();
}
