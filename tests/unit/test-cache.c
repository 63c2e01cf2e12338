/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache on a local directory: segment put/list/get/delete, exclusive
 * puts, junk names ignored by listings, the ack and agent status round
 * trips and their damage handling (every flipped byte, every truncation),
 * and the pure name, ack and status codecs from cache-internal.h.
 */
#include "ferry/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache-internal.h"
#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

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

static const struct ferry_agent_status sample_status = {
	.tracker = FERRY_TRACKER_QEMU,
	.interval_s = 2,
	.written_ns = INT64_C(1795000000123456789),
	.cycle = 17,
	.seq = 40,
	.marker_ns = INT64_C(1795000000000000000),
	.started_ns = INT64_C(1794999999900000000),
	.duration_ns = 223000000,
	.shipped_bytes = 1u << 20,
	.segments = 1,
	.read_bytes = 1u << 20,
	.source_waiting_bytes = 8192,
};

static int status_equal(const struct ferry_agent_status *a, const struct ferry_agent_status *b)
{
	return a->tracker == b->tracker && a->interval_s == b->interval_s &&
	       a->written_ns == b->written_ns && a->error == b->error && a->cycle == b->cycle &&
	       a->seq == b->seq && a->marker_ns == b->marker_ns && a->started_ns == b->started_ns &&
	       a->duration_ns == b->duration_ns && a->shipped_bytes == b->shipped_bytes &&
	       a->segments == b->segments && a->read_bytes == b->read_bytes &&
	       a->source_waiting_bytes == b->source_waiting_bytes &&
	       strcmp(a->message, b->message) == 0 && a->app_error == b->app_error &&
	       a->app_attempt_ns == b->app_attempt_ns && a->app_ok_ns == b->app_ok_ns &&
	       strcmp(a->app_message, b->app_message) == 0 &&
	       a->progress_done_bytes == b->progress_done_bytes &&
	       a->progress_total_bytes == b->progress_total_bytes &&
	       a->progress_rate == b->progress_rate;
}

/* Rewrites the checksum after an edit, as a writer of another version would. */
static void status_resum(uint8_t *buf, size_t len)
{
	struct ferry_id sum;
	ferry_sha256(buf, len - 32, &sum);
	memcpy(buf + len - 32, sum.b, 32);
}

static void test_status_codec(void)
{
	uint8_t buf[CACHE_STATUS_MAX];
	size_t len;
	struct ferry_agent_status a = sample_status, b;
	ok_r(cache_status_format("vm-7", &a, buf, sizeof(buf), &len), "format status");
	ok(len == CACHE_STATUS_LEN_12(4, 0, 0), "status length %zu", len);
	ok(memcmp(buf, "FERRYSTA", 8) == 0 && get_le16(buf + 8) == 1 && get_le16(buf + 10) == 2,
	   "status magic and version 1.2");
	ok(cache_status_parse(buf, len, "vm-7", &b) == 0 && status_equal(&a, &b), "parse status");
	ok(cache_status_parse(buf, len, NULL, &b) == 0, "parse status for any vm");
	ok(cache_status_parse(buf, len, "vm-8", &b) == -EBADMSG,
	   "status of another vm is -EBADMSG");

	int bad = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x20;
		struct ferry_agent_status x = { .cycle = 999 };
		if (cache_status_parse(buf, len, "vm-7", &x) != -EBADMSG || x.cycle != 999)
			bad++;
		buf[i] ^= 0x20;
	}
	ok(bad == 0, "every flipped byte of the status is -EBADMSG (%d not)", bad);
	bad = 0;
	for (size_t n = 0; n < len; n++)
		if (cache_status_parse(buf, n, "vm-7", &b) != -EBADMSG)
			bad++;
	ok(bad == 0, "every truncated status is -EBADMSG (%d not)", bad);

	/* A later minor adds fields before the checksum: read, extras skipped. */
	uint8_t big[CACHE_STATUS_MAX];
	memcpy(big, buf, len - 32);
	memset(big + len - 32, 0xab, 16);
	put_le16(big + 10, 3);
	put_le32(big + 12, (uint32_t)(len + 16));
	status_resum(big, len + 16);
	ok(cache_status_parse(big, len + 16, "vm-7", &b) == 0 && status_equal(&a, &b),
	   "status minor 3 with more fields read");
	ok(cache_status_parse(big, CACHE_STATUS_MAX + 1, "vm-7", &b) == -EBADMSG,
	   "status over the size bound is -EBADMSG");

	/* An unknown major with a good checksum is a version, not damage. */
	memcpy(big, buf, len);
	put_le16(big + 8, 2);
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EPROTONOSUPPORT, "status major 2");

	/* Fields that break the rules, under a good checksum. */
	struct {
		size_t off, size;
		uint64_t v;
		const char *what;
	} breaks[] = {
		{ 24, 8, 0, "cycle 0 with figures" },
		{ 32, 8, 0, "a cycle without a seq" },
		{ 56, 8, UINT64_MAX, "a negative duration" },
		{ 100, 4, 5000, "an error that is no errno" },
		{ 104, 1, 0, "no tracker" },
		{ 105, 1, 65, "a name length over 64" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(breaks); i++) {
		memcpy(big, buf, len);
		if (breaks[i].size == 8)
			put_le64(big + breaks[i].off, breaks[i].v);
		else if (breaks[i].size == 4)
			put_le32(big + breaks[i].off, (uint32_t)breaks[i].v);
		else
			big[breaks[i].off] = (uint8_t)breaks[i].v;
		status_resum(big, len);
		ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "%s is -EBADMSG",
		   breaks[i].what);
	}

	/* What the writer refuses to write. */
	struct ferry_agent_status z = { .tracker = FERRY_TRACKER_SCAN,
					.interval_s = 60,
					.source_waiting_bytes = FERRY_STATUS_UNKNOWN,
					.error = ECONNREFUSED };
	ok_r(cache_status_format("vm-7", &z, buf, sizeof(buf), &len),
	     "status before the first cycle, with an error, formats");
	ok(cache_status_parse(buf, len, "vm-7", &b) == 0 && status_equal(&z, &b) &&
		   b.source_waiting_bytes == FERRY_STATUS_UNKNOWN,
	   "unknown waiting bytes round trip");
	struct ferry_agent_status x = z;
	x.read_bytes = 1;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "cycle 0 with figures refused");
	x = z;
	x.tracker = 0;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "no tracker refused");
	x = sample_status;
	x.seq = 0;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "cycle without a seq refused");
	x = sample_status;
	x.error = -5;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "negative error refused");
	ok(cache_status_format("bad name", &z, buf, sizeof(buf), &len) == -EINVAL,
	   "bad vm refused");
	ok(cache_status_format("vm-7", &z, buf, 10, &len) == -ENOBUFS, "small buffer refused");
	char name[65];
	memset(name, 'n', 64);
	name[64] = 0;
	ok(cache_status_format(name, &z, buf, sizeof(buf), &len) == 0 &&
		   len == CACHE_STATUS_LEN_12(64, 0, 0) &&
		   cache_status_parse(buf, len, name, &b) == 0,
	   "64-byte vm name round trip");
}

/* 1.1: the message of a failed cycle, after the name. */
static void test_status_message(void)
{
	uint8_t buf[CACHE_STATUS_MAX], big[CACHE_STATUS_MAX];
	size_t len;
	struct ferry_agent_status a = sample_status, b;
	a.error = EINVAL;
	snprintf(a.message, sizeof(a.message),
		 "VM vm-7: disk vda (/srv/\xe2 d.img) changed size from 1 to 2 bytes");
	size_t m = strlen(a.message);
	ok_r(cache_status_format("vm-7", &a, buf, sizeof(buf), &len), "format with a message");
	ok(len == CACHE_STATUS_LEN_12(4, m, 0), "its length (%zu)", len);
	ok(cache_status_parse(buf, len, "vm-7", &b) == 0 && status_equal(&a, &b),
	   "the message round trips");
	int bad = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		if (cache_status_parse(buf, len, "vm-7", &b) != -EBADMSG)
			bad++;
		buf[i] ^= 0x01;
	}
	ok(bad == 0, "every flipped byte of a status with a message is -EBADMSG (%d not)", bad);

	/* Forged under good checksums. */
	size_t at = 106 + 4; /* the message length, after the name */
	memcpy(big, buf, len);
	big[at + 2 + 5] = 0;
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "a NUL in the message");
	memcpy(big, buf, len);
	put_le16(big + at, (uint16_t)(len - at - 2 - 32 + 1));
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "a message past the checksum");
	memcpy(big, buf, len);
	put_le32(big + 100, 0);
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "a message without an error");
	/* 1.1: the message, no app or progress fields. */
	memcpy(big, buf, len);
	len = CACHE_STATUS_LEN_MSG(4, m);
	put_le16(big + 10, 1);
	put_le32(big + 12, (uint32_t)len);
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == 0 && status_equal(&a, &b),
	   "a 1.1 status reads, its 1.2 fields zero");
	put_le16(big + 10, 2);
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG,
	   "a 1.2 status without its app and progress fields is -EBADMSG");
	/* 1.0: no message field at all. */
	struct ferry_agent_status old = sample_status;
	ok_r(cache_status_format("vm-7", &old, big, sizeof(big), &len), "format without message");
	len = CACHE_STATUS_LEN(4);
	put_le16(big + 10, 0);
	put_le32(big + 12, (uint32_t)len);
	status_resum(big, len);
	ok(len == CACHE_STATUS_LEN(4) && cache_status_parse(big, len, "vm-7", &b) == 0 &&
		   status_equal(&old, &b) && b.message[0] == 0,
	   "a 1.0 status reads, with no message");
	put_le16(big + 10, 1);
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG,
	   "a 1.1 status without room for its message length is -EBADMSG");

	/* The writer's rules. */
	struct ferry_agent_status x = sample_status;
	snprintf(x.message, sizeof(x.message), "said something");
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "a message without an error refused");
	x.error = EIO;
	memset(x.message, 'm', FERRY_STATUS_MESSAGE_MAX);
	x.message[FERRY_STATUS_MESSAGE_MAX] = 0;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == 0 &&
		   cache_status_parse(buf, len, "vm-7", &b) == 0 &&
		   strlen(b.message) == FERRY_STATUS_MESSAGE_MAX,
	   "a message of FERRY_STATUS_MESSAGE_MAX bytes round trips");
	x.message[FERRY_STATUS_MESSAGE_MAX] = 'm'; /* no NUL in the field */
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "a message without a NUL in its field refused");
}

/* 1.2: the app-consistent and progress fields, after the message. */
static void test_status_app(void)
{
	uint8_t buf[CACHE_STATUS_MAX], big[CACHE_STATUS_MAX];
	size_t len;
	struct ferry_agent_status a = sample_status, b;
	a.error = EIO;
	snprintf(a.message, sizeof(a.message), "cycle failed");
	a.app_error = ETIMEDOUT;
	a.app_attempt_ns = INT64_C(1795000000000000001);
	a.app_ok_ns = INT64_C(1794000000000000000);
	snprintf(a.app_message, sizeof(a.app_message), "guest agent: fsfreeze timed out\x01");
	a.progress_done_bytes = 3u << 20;
	a.progress_total_bytes = 8u << 20;
	a.progress_rate = 123456;
	size_t m = strlen(a.message), am = strlen(a.app_message);
	ok_r(cache_status_format("vm-7", &a, buf, sizeof(buf), &len), "format with app fields");
	ok(len == CACHE_STATUS_LEN_12(4, m, am), "its length (%zu)", len);
	ok(cache_status_parse(buf, len, "vm-7", &b) == 0 && status_equal(&a, &b),
	   "app and progress fields round trip");
	int bad = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x04;
		if (cache_status_parse(buf, len, "vm-7", &b) != -EBADMSG)
			bad++;
		buf[i] ^= 0x04;
	}
	ok(bad == 0, "every flipped byte of a 1.2 status is -EBADMSG (%d not)", bad);
	bad = 0;
	for (size_t n = 0; n < len; n++)
		if (cache_status_parse(buf, n, "vm-7", &b) != -EBADMSG)
			bad++;
	ok(bad == 0, "every truncated 1.2 status is -EBADMSG (%d not)", bad);

	/* Forged under good checksums. */
	size_t e = 106 + 4 + 2 + m; /* the 1.2 fields */
	struct {
		size_t off, size;
		uint64_t v;
		const char *what;
	} breaks[] = {
		{ 0, 4, 5000, "an app error that is no errno" },
		{ 0, 4, 0, "an app message without an app error" },
		{ 4, 8, UINT64_MAX, "a negative attempt time" },
		{ 12, 8, UINT64_MAX, "a negative success time" },
		{ 20, 8, 9u << 20, "progress beyond its total" },
		{ 44, 2, 1025, "an app message over 1024 bytes" },
		{ 44, 2, 200, "an app message past the checksum" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(breaks); i++) {
		memcpy(big, buf, len);
		if (breaks[i].size == 8)
			put_le64(big + e + breaks[i].off, breaks[i].v);
		else if (breaks[i].size == 4)
			put_le32(big + e + breaks[i].off, (uint32_t)breaks[i].v);
		else
			put_le16(big + e + breaks[i].off, (uint16_t)breaks[i].v);
		status_resum(big, len);
		ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "%s is -EBADMSG",
		   breaks[i].what);
	}
	memcpy(big, buf, len);
	big[e + 46 + 3] = 0;
	status_resum(big, len);
	ok(cache_status_parse(big, len, "vm-7", &b) == -EBADMSG, "a NUL in the app message");

	/* The writer's rules. */
	struct ferry_agent_status x = a;
	x.app_error = 0;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "an app message without an app error refused");
	x = a;
	x.progress_done_bytes = x.progress_total_bytes + 1;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "progress beyond its total refused");
	x = a;
	x.progress_done_bytes = x.progress_total_bytes = 0;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "a rate without progress refused");
	x = a;
	x.app_attempt_ns = -1;
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == -EINVAL,
	   "a negative attempt time refused");
	x = a;
	memset(x.message, 'm', FERRY_STATUS_MESSAGE_MAX);
	x.message[FERRY_STATUS_MESSAGE_MAX] = 0;
	memset(x.app_message, 'a', FERRY_STATUS_MESSAGE_MAX);
	x.app_message[FERRY_STATUS_MESSAGE_MAX] = 0;
	char name[65];
	memset(name, 'n', 64);
	name[64] = 0;
	ok(cache_status_format(name, &x, buf, sizeof(buf), &len) == 0 && len <= CACHE_STATUS_MAX &&
		   cache_status_parse(buf, len, name, &b) == 0 && status_equal(&x, &b),
	   "the longest status (%zu bytes) round trips", len);
	/* An app success with no failure: no message, times kept. */
	x = sample_status;
	x.app_attempt_ns = x.app_ok_ns = INT64_C(1795000000000000000);
	ok(cache_status_format("vm-7", &x, buf, sizeof(buf), &len) == 0 &&
		   cache_status_parse(buf, len, "vm-7", &b) == 0 && status_equal(&x, &b),
	   "a successful app attempt round trips");
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

	/* The agent's status: missing, round trip, replaced whole, damage. */
	struct ferry_agent_status st;
	ok(ferry_cache_get_status(c, "vm1", &st) == -ENOENT, "missing status is -ENOENT");
	ok_r(ferry_cache_put_status(c, "vm1", &sample_status), "put status");
	ok(ferry_cache_get_status(c, "vm1", &st) == 0 && status_equal(&st, &sample_status),
	   "status round trip");
	struct ferry_agent_status next = sample_status;
	next.cycle++;
	next.seq++;
	next.source_waiting_bytes = 0;
	ok_r(ferry_cache_put_status(c, "vm1", &next), "status replaced whole");
	ok(ferry_cache_get_status(c, "vm1", &st) == 0 && st.cycle == 18 &&
		   st.source_waiting_bytes == 0,
	   "newer status read");
	ok(ferry_cache_put_status(c, "vm1", &(struct ferry_agent_status){ 0 }) == -EINVAL,
	   "status without a tracker refused");
	ok(ferry_cache_get_status(c, "vm1", &st) == 0 && st.cycle == 18,
	   "a refused put left the status alone");
	ok_r(ferry_cache_list_segments(c, "vm1", &seqs, &n, NULL), "list beside a status");
	ok(n == 2, "a status is no segment");
	free(seqs);
	touch("status/vm2.status", "FERRYSTA but not really");
	ok(ferry_cache_get_status(c, "vm2", &st) == -EBADMSG, "damaged status is -EBADMSG");
	free(cmd);
	if (asprintf(&cmd, "cp %s/c/status/vm1.status %s/c/status/vm3.status", tmpdir, tmpdir) < 0)
		abort();
	ok(system(cmd) == 0, "copy status");
	ok(ferry_cache_get_status(c, "vm3", &st) == -EBADMSG, "another vm's status is -EBADMSG");
	free(cmd);
	if (asprintf(&cmd, "head -c 1000000 /dev/zero > %s/c/status/vm4.status", tmpdir) < 0)
		abort();
	ok(system(cmd) == 0, "a large blob under a status name");
	ok(ferry_cache_get_status(c, "vm4", &st) == -EBADMSG, "a large status is -EBADMSG");
	ok(ferry_cache_get_status(c, "../x", &st) == -EINVAL, "bad vm refused");
}

/* A sparse file of size bytes at rel in the cache: costs no disk. */
static int sparse(const char *rel, uint64_t size)
{
	_cleanup_free_ char *p = NULL;
	if (asprintf(&p, "%s/c/%s", tmpdir, rel) < 0)
		abort();
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return fd >= 0 && ftruncate(fd, (off_t)size) == 0 ? 0 : -errno;
}

/* Runs get_segment for seq in a child limited to 512 MiB of address space:
 * its result, or 1000 + the signal that ended it. */
static int get_segment_limited(struct ferry_cache *c, const char *vm, uint64_t seq)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		struct rlimit rl = { 512u << 20, 512u << 20 };
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			_exit(100);
		void *buf = NULL;
		size_t len = 0;
		int r = ferry_cache_get_segment(c, vm, seq, &buf, &len);
		free(buf);
		_exit(r == -EFBIG ? 0 : r == 0 ? 1 : r == -ENOMEM ? 2 : 3);
	}
	int status;
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

/* Sizes read from the cache are bounded before anything is allocated: a
 * 3 GiB junk segment and a 1 MiB junk ack. */
static void test_bounds(void)
{
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s/c", tmpdir) < 0)
		abort();
	_cleanup_(ferry_cache_freep) struct ferry_cache *c = NULL;
	ok_r(ferry_cache_open(url, 1, &c), "open cache");
	if (!c)
		return;
	ok_r(ferry_cache_put_segment(c, "big", 1, "x", 1), "put a small segment");
	ok(sparse("segments/big/0000000000000002.seg", UINT64_C(3) << 30) == 0,
	   "a 3 GiB junk segment beside it");
	int r = get_segment_limited(c, "big", 2);
	ok(r == 0, "the 3 GiB segment is -EFBIG in 512 MiB of address space (child: %d)", r);
	ok(sparse("segments/big/0000000000000003.seg", FERRY_SEGMENT_MAX_SIZE + 1) == 0,
	   "a segment one byte over FERRY_SEGMENT_MAX_SIZE");
	void *buf = NULL;
	size_t len = 0;
	ok(ferry_cache_get_segment(c, "big", 3, &buf, &len) == -EFBIG && !buf,
	   "one byte over the bound is -EFBIG");
	ok(sparse("segments/big/0000000000000004.seg", FERRY_SEGMENT_MAX_SIZE) == 0,
	   "a segment of exactly FERRY_SEGMENT_MAX_SIZE");
	ok(ferry_cache_get_segment(c, "big", 4, &buf, &len) == 0 && len == FERRY_SEGMENT_MAX_SIZE,
	   "is read (the parser then judges it)");
	free(buf);
	ok(ferry_cache_get_segment(c, "big", 1, &buf, &len) == 0 && len == 1,
	   "the small segment beside them reads");
	free(buf);
	uint64_t *seqs = NULL, bytes = 0;
	size_t n = 0;
	ok(ferry_cache_list_segments(c, "big", &seqs, &n, &bytes) == 0 && n == 4,
	   "the junk still lists (the replicator refuses it by name)");
	free(seqs);

	ok(sparse("acks/big.ack", 1u << 20) == 0, "a 1 MiB blob under an ack name");
	struct ferry_ack a;
	ok(ferry_cache_get_ack(c, "big", &a) == -EBADMSG, "an ack over CACHE_ACK_MAX is -EBADMSG");
	struct ferry_chain_head h;
	ok(ferry_cache_chain_head(c, "big", 0, &h) == -EBADMSG,
	   "the chain head behind an oversized ack is -EBADMSG");
	_cleanup_free_ char *ackpath = NULL;
	if (asprintf(&ackpath, "%s/c/acks/big.ack", tmpdir) < 0)
		abort();
	ok(unlink(ackpath) == 0 && ferry_cache_get_ack(c, "big", &a) == 0 && a.seq == 0,
	   "the ack removed");
	ok(sparse("segments/big/0000000000000005.seg", FERRY_SEGMENT_MAX_SIZE + 1) == 0,
	   "the newest segment oversized");
	ok(ferry_cache_chain_head(c, "big", 0, &h) == -EBADMSG,
	   "a chain head whose newest segment is oversized is -EBADMSG, not -EFBIG");
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot make a temporary directory\n");
		return 77;
	}
	test_names();
	test_ack_codec();
	test_status_codec();
	test_status_message();
	test_status_app();
	test_cache();
	test_bounds();
	rm_rf(tmpdir);
	return tap_done();
}
