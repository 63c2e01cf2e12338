/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cache's control records (control.h): the agent lease, the resync
 * request and the resync want. Round trips; every flipped byte and every
 * truncation refused as damage; a checksummed unknown major version told
 * apart from damage; a later minor version's extra fields read past; the
 * format's rules refused on both sides; another VM's record refused. Then
 * the I/O on a local cache: a missing record is -ENOENT, the first lease
 * is an exclusive create, fingerprint blobs of old epochs go, and a record
 * blown up to megabytes is damage read no further.
 */
#include "ferry/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control-internal.h"
#include "ferry/cache.h"
#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test-control-XXXXXX";

static struct ferry_lease a_lease(void)
{
	struct ferry_lease l = { .pid = 4242, .written_ns = 1000, .expires_ns = 31000, .seq = 77 };
	for (size_t i = 0; i < sizeof(l.id); i++)
		l.id[i] = (uint8_t)(i + 1);
	snprintf(l.host, sizeof(l.host), "source-host.example");
	return l;
}

static struct ferry_resync_request *a_request(void)
{
	struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		abort();
	q->epoch = 3;
	q->base_seq = (UINT64_C(1) << 24) + 90;
	memset(q->base_digest.b, 0xab, sizeof(q->base_digest.b));
	q->requested_ns = 123456789;
	q->applied_seq = 90;
	q->ndisks = 2;
	snprintf(q->disks[0].name, sizeof(q->disks[0].name), "os");
	q->disks[0].size = 1 << 30;
	memset(q->disks[0].sum.b, 0x11, sizeof(q->disks[0].sum.b));
	snprintf(q->disks[1].name, sizeof(q->disks[1].name), "data");
	q->disks[1].size = 0; /* never declared: no fingerprints */
	return q;
}

static struct ferry_resync_want a_want(void)
{
	struct ferry_resync_want w = { .written_ns = 5,
				       .seen_epoch = 2,
				       .reason = FERRY_WANT_STATE_BEHIND };
	memset(w.id, 0x5c, sizeof(w.id));
	return w;
}

/* Flips every byte and cuts at every length: each is damage. */
static void check_damage(const char *what, const uint8_t *good, size_t len,
			 int (*parse)(const void *, size_t, const char *, void *), void *out)
{
	uint8_t *b = malloc(len);
	if (!b)
		abort();
	size_t flipped_ok = 0, cut_ok = 0;
	for (size_t i = 0; i < len; i++) {
		memcpy(b, good, len);
		b[i] ^= 0x01;
		flipped_ok += parse(b, len, "vm1", out) == -EBADMSG;
	}
	for (size_t n = 0; n < len; n++)
		cut_ok += parse(good, n, "vm1", out) == -EBADMSG;
	ok(flipped_ok == len, "%s: each of %zu flipped bytes is damage (%zu were)", what, len,
	   flipped_ok);
	ok(cut_ok == len, "%s: each truncation is damage", what);
	free(b);
}

/* The envelope's major version, under a checksum made good again:
 * -EPROTONOSUPPORT, not damage; a minor version with a field more: read. */
static void reseal(uint8_t *b, size_t len)
{
	struct ferry_id sum;
	put_le32(b + 12, (uint32_t)len);
	ferry_sha256(b, len - 32, &sum);
	memcpy(b + len - 32, sum.b, 32);
}

static void check_versions(const char *what, const uint8_t *good, size_t len,
			   int (*parse)(const void *, size_t, const char *, void *), void *out)
{
	uint8_t b[8192];
	memcpy(b, good, len);
	put_le16(b + 8, 2);
	reseal(b, len);
	ok(parse(b, len, "vm1", out) == -EPROTONOSUPPORT, "%s: major 2 is not supported", what);
	/* 1.1 with 8 more bytes before the checksum. */
	memcpy(b, good, len - 32);
	memset(b + len - 32, 0x77, 8);
	put_le16(b + 10, 1);
	reseal(b, len + 8);
	ok(parse(b, len + 8, "vm1", out) == 0, "%s: a 1.1 record with more fields is read", what);
	ok(parse(good, len, "vm2", out) == -EBADMSG, "%s: another VM's record is damage", what);
}

static int lease_parse(const void *b, size_t n, const char *vm, void *out)
{
	return control_lease_parse(b, n, vm, out);
}
static int request_parse(const void *b, size_t n, const char *vm, void *out)
{
	return control_request_parse(b, n, vm, out);
}
static int want_parse(const void *b, size_t n, const char *vm, void *out)
{
	return control_want_parse(b, n, vm, out);
}

static void test_lease_codec(void)
{
	uint8_t buf[CONTROL_LEASE_MAX];
	size_t len;
	struct ferry_lease l = a_lease(), got;
	ok_r(control_lease_format("vm1", &l, buf, sizeof(buf), &len), "lease encodes");
	ok(control_lease_parse(buf, len, "vm1", &got) == 0 && memcmp(got.id, l.id, 16) == 0 &&
		   strcmp(got.host, l.host) == 0 && got.pid == 4242 && got.written_ns == 1000 &&
		   got.expires_ns == 31000 && got.seq == 77,
	   "lease round trip");
	check_damage("lease", buf, len, lease_parse, &got);
	check_versions("lease", buf, len, lease_parse, &got);

	struct ferry_lease bad = l;
	memset(bad.id, 0, sizeof(bad.id));
	ok(control_lease_format("vm1", &bad, buf, sizeof(buf), &len) == -EINVAL, "no identity");
	bad = l;
	bad.host[0] = 0;
	ok(control_lease_format("vm1", &bad, buf, sizeof(buf), &len) == -EINVAL, "no host");
	bad = l;
	snprintf(bad.host, sizeof(bad.host), "a host");
	ok(control_lease_format("vm1", &bad, buf, sizeof(buf), &len) == -EINVAL,
	   "a host with a space");
	bad = l;
	bad.expires_ns = bad.written_ns - 1;
	ok(control_lease_format("vm1", &bad, buf, sizeof(buf), &len) == -EINVAL,
	   "an expiry before the writing");
	ok(control_lease_format("../x", &l, buf, sizeof(buf), &len) == -EINVAL, "a bad VM name");
	ok(control_lease_format("vm1", &l, buf, 40, &len) == -ENOBUFS, "a short buffer");
}

static void test_request_codec(void)
{
	static uint8_t buf[CONTROL_REQUEST_MAX];
	size_t len;
	_cleanup_free_ struct ferry_resync_request *q = a_request();
	_cleanup_free_ struct ferry_resync_request *got = calloc(1, sizeof(*got));
	ok_r(control_request_format("vm1", q, buf, sizeof(buf), &len), "request encodes");
	ok(control_request_parse(buf, len, "vm1", got) == 0 && got->epoch == 3 &&
		   got->base_seq == q->base_seq &&
		   ferry_id_equal(&got->base_digest, &q->base_digest) &&
		   got->requested_ns == 123456789 && got->applied_seq == 90 && got->ndisks == 2 &&
		   strcmp(got->disks[0].name, "os") == 0 && got->disks[0].size == 1 << 30 &&
		   ferry_id_equal(&got->disks[0].sum, &q->disks[0].sum) &&
		   strcmp(got->disks[1].name, "data") == 0 && got->disks[1].size == 0 &&
		   ferry_id_is_null(&got->disks[1].sum),
	   "request round trip");
	check_damage("request", buf, len, request_parse, got);
	check_versions("request", buf, len, request_parse, got);

	_cleanup_free_ struct ferry_resync_request *bad = a_request();
	bad->epoch = 0;
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL, "epoch 0");
	*bad = *q;
	memset(bad->base_digest.b, 0, 32);
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL, "no base digest");
	*bad = *q;
	bad->applied_seq = bad->base_seq + 1;
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL,
	   "a base behind the applied segment");
	*bad = *q;
	snprintf(bad->disks[1].name, sizeof(bad->disks[1].name), "os");
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL, "a disk twice");
	*bad = *q;
	bad->disks[1].size = 4096;
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL,
	   "a size without fingerprints");
	*bad = *q;
	bad->ndisks = 0;
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == -EINVAL, "no disk");
	/* The most disks there may be, with the longest names: it fits. */
	*bad = *q;
	bad->ndisks = FERRY_RESYNC_MAX_DISKS;
	for (size_t i = 0; i < bad->ndisks; i++) {
		snprintf(bad->disks[i].name, sizeof(bad->disks[i].name), "%060zu", i);
		bad->disks[i].size = 4096;
		memset(bad->disks[i].sum.b, 1, 32);
	}
	ok(control_request_format("vm1", bad, buf, sizeof(buf), &len) == 0 &&
		   control_request_parse(buf, len, "vm1", got) == 0 && got->ndisks == 64,
	   "64 disks with long names round trip (%zu bytes)", len);
}

static void test_want_codec(void)
{
	uint8_t buf[CONTROL_WANT_MAX];
	size_t len;
	struct ferry_resync_want w = a_want(), got;
	ok_r(control_want_format("vm1", &w, buf, sizeof(buf), &len), "want encodes");
	ok(control_want_parse(buf, len, "vm1", &got) == 0 && memcmp(got.id, w.id, 16) == 0 &&
		   got.seen_epoch == 2 && got.reason == FERRY_WANT_STATE_BEHIND &&
		   got.written_ns == 5,
	   "want round trip");
	check_damage("want", buf, len, want_parse, &got);
	check_versions("want", buf, len, want_parse, &got);
	w.reason = 0;
	ok(control_want_format("vm1", &w, buf, sizeof(buf), &len) == -EINVAL, "no reason");
	w.reason = 200;
	ok(control_want_format("vm1", &w, buf, sizeof(buf), &len) == 0 &&
		   control_want_parse(buf, len, "vm1", &got) == 0 &&
		   strcmp(ferry_want_reason_text(got.reason), "unknown reason") == 0,
	   "a reason from a newer agent is read and shown as unknown");
}

static int group_parse(const void *b, size_t n, const char *vm, void *out)
{
	return control_group_parse(b, n, vm, out);
}

static void test_group_codec(void)
{
	uint8_t buf[CONTROL_GROUP_MAX];
	size_t len;
	struct ferry_group_record g = { .step = FERRY_GROUP_ABORT, .round = 9, .time_ns = 77 }, got;
	strcpy(g.vm, "vm1");
	strcpy(g.reason, "member b was not paused in time");
	ok_r(control_group_format(&g, buf, sizeof(buf), &len), "group record encodes");
	/* Field by field: memcmp would compare the padding too. */
	ok(control_group_parse(buf, len, "vm1", &got) == 0 && got.step == g.step &&
		   got.round == g.round && got.time_ns == g.time_ns && strcmp(got.vm, g.vm) == 0 &&
		   strcmp(got.reason, g.reason) == 0,
	   "group record round trip");
	check_damage("group", buf, len, group_parse, &got);
	check_versions("group", buf, len, group_parse, &got);
	g.step = FERRY_GROUP_READY;
	ok(control_group_format(&g, buf, sizeof(buf), &len) == -EINVAL, "a reason only with abort");
	g.reason[0] = 0;
	g.round = 0;
	ok(control_group_format(&g, buf, sizeof(buf), &len) == -EINVAL, "round 0 only for member");
	g.step = FERRY_GROUP_MEMBER;
	ok_r(control_group_format(&g, buf, sizeof(buf), &len), "a member record, round 0");
	g.step = 6;
	ok(control_group_format(&g, buf, sizeof(buf), &len) == -EINVAL, "an unknown step");
}

struct seen {
	char names[8][80];
	size_t n;
};

static int note_seen(const char *vm, uint8_t step, void *userdata)
{
	struct seen *s = userdata;
	if (s->n < 8)
		snprintf(s->names[s->n++], sizeof(s->names[0]), "%s.%u", vm, step);
	return 0;
}

static void test_group_io(struct ferry_cache *c)
{
	struct ferry_group_record g = { .step = FERRY_GROUP_MEMBER, .time_ns = 1 }, got;
	struct seen s = { 0 };
	strcpy(g.vm, "vm1");
	ok_r(ferry_control_put_group(c, "grp", &g), "member vm1");
	strcpy(g.vm, "vm2");
	ok_r(ferry_control_put_group(c, "grp", &g), "member vm2");
	ok_r(ferry_control_list_group(c, "grp", 0, note_seen, &s), "members listed");
	ok(s.n == 2 && strcmp(s.names[0], "vm1.1") == 0 && strcmp(s.names[1], "vm2.1") == 0,
	   "both members, in order");
	for (uint64_t round = 4; round <= 5; round++) {
		g = (struct ferry_group_record){ .step = FERRY_GROUP_PAUSED,
						 .round = round,
						 .time_ns = 40 + (int64_t)round };
		strcpy(g.vm, "vm1");
		ok_r(ferry_control_put_group(c, "grp", &g), "paused in round %u", (unsigned)round);
	}
	ok(ferry_control_get_group(c, "grp", 5, FERRY_GROUP_PAUSED, "vm1", &got) == 0 &&
		   got.time_ns == 45,
	   "a paused record read back");
	ok(ferry_control_get_group(c, "grp", 5, FERRY_GROUP_READY, "vm1", &got) == -ENOENT,
	   "an absent step");
	ok(ferry_control_get_group(c, "grp", 5, FERRY_GROUP_PAUSED, "../x", &got) == -EINVAL,
	   "a bad VM name");
	ok(ferry_control_put_group(c, "a/b", &g) == -EINVAL, "a bad group name");
	ok_r(ferry_control_delete_group_rounds(c, "grp", "vm1", 5), "rounds before 5 dropped");
	ok(ferry_control_get_group(c, "grp", 4, FERRY_GROUP_PAUSED, "vm1", &got) == -ENOENT &&
		   ferry_control_get_group(c, "grp", 5, FERRY_GROUP_PAUSED, "vm1", &got) == 0,
	   "round 4 went, round 5 stayed");
	memset(&s, 0, sizeof(s));
	ok_r(ferry_control_list_group(c, "grp", 5, note_seen, &s), "round 5 listed");
	ok(s.n == 1 && strcmp(s.names[0], "vm1.3") == 0, "with its one record");

	/* A VM's name that starts another's: each deletes its own alone. */
	g = (struct ferry_group_record){ .step = FERRY_GROUP_PAUSED, .round = 4, .time_ns = 44 };
	strcpy(g.vm, "db");
	ok_r(ferry_control_put_group(c, "grp", &g), "db paused in round 4");
	strcpy(g.vm, "db.x");
	ok_r(ferry_control_put_group(c, "grp", &g), "db.x paused in round 4");
	ok_r(ferry_control_delete_group_rounds(c, "grp", "db", 5), "db's rounds before 5 dropped");
	ok(ferry_control_get_group(c, "grp", 4, FERRY_GROUP_PAUSED, "db", &got) == -ENOENT,
	   "db's record of round 4 went");
	ok(ferry_control_get_group(c, "grp", 4, FERRY_GROUP_PAUSED, "db.x", &got) == 0 &&
		   strcmp(got.vm, "db.x") == 0,
	   "db.x's record of round 4 stayed");
}

static int count_files(const char *dir)
{
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "find '%s' -type f 2>/dev/null | wc -l", dir) < 0)
		abort();
	FILE *f = popen(cmd, "r");
	int n = -1;
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

static void test_io(void)
{
	_cleanup_free_ char *url = NULL, *fps = NULL;
	if (asprintf(&url, "%s/c", tmpdir) < 0 || asprintf(&fps, "%s/c/resync/vm1", tmpdir) < 0)
		abort();
	_cleanup_(ferry_cache_freep) struct ferry_cache *c = NULL;
	ok_r(ferry_cache_open(url, 1, &c), "cache opens");
	if (!c)
		return;

	struct ferry_lease l = a_lease(), got;
	ok(ferry_control_get_lease(c, "vm1", &got) == -ENOENT, "no lease yet");
	ok_r(ferry_control_put_lease(c, "vm1", &l, 1), "the first lease is created");
	ok(ferry_control_put_lease(c, "vm1", &l, 1) == -EEXIST,
	   "a second exclusive take finds it there");
	l.seq = 78;
	ok_r(ferry_control_put_lease(c, "vm1", &l, 0), "a lease is replaced");
	ok(ferry_control_get_lease(c, "vm1", &got) == 0 && got.seq == 78, "and read back");

	_cleanup_free_ struct ferry_resync_request *q = a_request();
	_cleanup_free_ struct ferry_resync_request *gq = calloc(1, sizeof(*gq));
	ok(ferry_control_get_request(c, "vm1", gq) == -ENOENT, "no request yet");
	ok_r(ferry_control_put_request(c, "vm1", q), "request put");
	ok(ferry_control_get_request(c, "vm1", gq) == 0 && gq->epoch == 3, "request read");
	ok_r(ferry_control_delete_request(c, "vm1"), "request deleted");
	ok(ferry_control_get_request(c, "vm1", gq) == -ENOENT, "and gone");

	struct ferry_resync_want w = a_want(), gw;
	ok(ferry_control_get_want(c, "vm1", &gw) == -ENOENT, "no want yet");
	ok_r(ferry_control_put_want(c, "vm1", &w), "want put");
	ok(ferry_control_get_want(c, "vm1", &gw) == 0 && gw.seen_epoch == 2, "want read");
	ok_r(ferry_control_delete_want(c, "vm1"), "want deleted");
	ok_r(ferry_control_delete_want(c, "vm1"), "deleting it again is fine");

	const char blob[] = "fingerprints";
	uint64_t size;
	char part[5] = "";
	ok_r(ferry_control_put_fp(c, "vm1", 1, "os", blob, sizeof(blob)),
	     "fingerprints of epoch 1");
	ok_r(ferry_control_put_fp(c, "vm1", 2, "os", blob, sizeof(blob)),
	     "fingerprints of epoch 2");
	ok_r(ferry_control_put_fp(c, "vm1", 2, "data", blob, sizeof(blob)), "another disk");
	ok(ferry_control_fp_size(c, "vm1", 2, "os", &size) == 0 && size == sizeof(blob),
	   "their size");
	ok(ferry_control_get_fp_range(c, "vm1", 2, "os", 6, part, 4) == 0 &&
		   memcmp(part, "prin", 4) == 0,
	   "a range of them");
	ok(ferry_control_put_fp(c, "vm1", 0, "os", blob, sizeof(blob)) == -EINVAL, "epoch 0");
	ok(ferry_control_put_fp(c, "vm1", 1, "../x", blob, sizeof(blob)) == -EINVAL,
	   "a bad disk name");
	ok(count_files(fps) == 3, "three fingerprint blobs");
	ok_r(ferry_control_delete_fps(c, "vm1", 2), "all but epoch 2 deleted");
	ok(count_files(fps) == 2 && ferry_control_fp_size(c, "vm1", 1, "os", &size) == -ENOENT,
	   "epoch 1's went");
	ok_r(ferry_control_delete_fps(c, "vm1", 0), "all deleted");
	ok(count_files(fps) == 0, "none left");

	/* A lease blown up to a megabyte is damage, refused by its size. */
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "head -c 1000000 /dev/zero > %s/c/leases/vm1.lease", tmpdir) < 0 ||
	    system(cmd) != 0)
		abort();
	ok(ferry_control_get_lease(c, "vm1", &got) == -EBADMSG, "a huge lease is damage");
	ok(ferry_control_get_lease(c, "../vm", &got) == -EINVAL, "a bad VM name");
	test_group_io(c);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("1..0 # SKIP cannot make a temporary directory\n");
		return 0;
	}
	test_lease_codec();
	test_request_codec();
	test_want_codec();
	test_group_codec();
	test_io();
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "rm -rf '%s'", tmpdir) >= 0 && system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", tmpdir);
	return tap_done();
}
