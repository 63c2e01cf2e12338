/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Segment writer and parser: round trips of every record type, the writer's
 * refusals, and the parser's: every flipped byte, every truncation, forged
 * segments whose digest is right but whose content is not, unknown major
 * versions, group markers (format 3.0) and the golden files under
 * tests/data/segment.
 */
#include "ferry/changelog.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment_writer *, ferry_segment_writer_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment *, ferry_segment_free);

#define MiB (1024u * 1024u)
/* A marker time the format accepts (2023-11-14). */
#define T0 (INT64_C(1700000000) * 1000000000)

static void fill(uint8_t *b, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[i] = (uint8_t)x;
	}
}

/* Parses buf and reports whether it gave exactly the expected error, and
 * that nothing was returned on failure. */
static int parse_fails(const void *buf, size_t len, int expect)
{
	struct ferry_segment *s = (struct ferry_segment *)0x1;
	int r = ferry_segment_parse(buf, len, &s);
	if (r >= 0) {
		ferry_segment_free(s);
		return 0;
	}
	return r == expect && s == (struct ferry_segment *)0x1;
}

static void test_round_trip(void)
{
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
	struct ferry_id prev;
	ferry_sha256("prev", 4, &prev);
	ok_r(ferry_segment_writer_new("vm-1", 7, &prev, &w), "writer new");
	ok(ferry_segment_writer_size(w) == 0, "empty writer has size 0");

	uint8_t d0[8192], d1[4096];
	fill(d0, sizeof(d0), 1);
	fill(d1, sizeof(d1), 2);
	ok_r(ferry_segment_writer_add_disk(w, 0, "vda", 1 * MiB), "add disk 0");
	ok_r(ferry_segment_writer_add_disk(w, 3, "vdb.data_1", 10 * MiB + 100), "add disk 3");
	ok_r(ferry_segment_writer_add_data(w, 0, 4096, d0, sizeof(d0)), "add data");
	ok_r(ferry_segment_writer_add_zero(w, 3, 0, 1 * MiB), "add zero");
	ok_r(ferry_segment_writer_add_trim(w, 0, 1 * MiB - 4096, 4096), "add trim at the end");
	/* The last, partial block of a disk whose size is not a block multiple. */
	ok_r(ferry_segment_writer_add_data(w, 3, 10 * MiB, d1, sizeof(d1)),
	     "add partial last block");
	ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0 + 123),
	     "add crash marker");
	ok_r(ferry_segment_writer_add_disk(w, 0, "vda", 2 * MiB), "redeclare disk 0 grown");
	ok_r(ferry_segment_writer_add_data(w, 0, 2 * MiB - 4096, d1, sizeof(d1)),
	     "data in grown area");
	ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_APP, T0 - 5), "add app marker");
	ok(ferry_segment_writer_size(w) > sizeof(d0) + sizeof(d1) * 2, "size counts payload");

	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	struct ferry_segment_info wi;
	ok_r(ferry_segment_writer_finish(w, &buf, &len, &wi), "finish");
	ok(wi.seq == 7 && strcmp(wi.vm, "vm-1") == 0 && ferry_id_equal(&wi.prev, &prev) &&
		   wi.nrecords == 10 && !ferry_id_is_null(&wi.digest),
	   "writer info");

	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(buf, len, &s), "parse");
	if (!s)
		return;
	const struct ferry_segment_info *pi = ferry_segment_info(s);
	ok(memcmp(pi, &wi, sizeof(wi)) == 0, "parsed info equals writer info");

	struct ferry_record r;
	ok_r(ferry_segment_record(s, 0, &r), "record 0");
	ok(r.type == FERRY_REC_DISK && r.disk == 0 && r.length == 1 * MiB &&
		   strcmp(r.name, "vda") == 0,
	   "disk 0 record");
	ok_r(ferry_segment_record(s, 1, &r), "record 1");
	ok(r.type == FERRY_REC_DISK && r.disk == 3 && r.length == 10 * MiB + 100 &&
		   strcmp(r.name, "vdb.data_1") == 0,
	   "disk 3 record");
	ok_r(ferry_segment_record(s, 2, &r), "record 2");
	ok(r.type == FERRY_REC_DATA && r.disk == 0 && r.offset == 4096 && r.length == sizeof(d0) &&
		   memcmp(r.data, d0, sizeof(d0)) == 0,
	   "data record");
	ok_r(ferry_segment_record(s, 3, &r), "record 3");
	ok(r.type == FERRY_REC_ZERO && r.disk == 3 && r.offset == 0 && r.length == 1 * MiB,
	   "zero record");
	ok_r(ferry_segment_record(s, 4, &r), "record 4");
	ok(r.type == FERRY_REC_TRIM && r.disk == 0 && r.offset == 1 * MiB - 4096 &&
		   r.length == 4096,
	   "trim record");
	ok_r(ferry_segment_record(s, 5, &r), "record 5");
	ok(r.type == FERRY_REC_DATA && r.disk == 3 && memcmp(r.data, d1, sizeof(d1)) == 0,
	   "partial block record");
	ok_r(ferry_segment_record(s, 6, &r), "record 6");
	ok(r.type == FERRY_REC_MARKER && r.consistency == FERRY_CONSISTENCY_CRASH &&
		   r.time_ns == T0 + 123,
	   "crash marker record");
	ok_r(ferry_segment_record(s, 7, &r), "record 7");
	ok(r.type == FERRY_REC_DISK && r.length == 2 * MiB, "redeclared disk record");
	ok_r(ferry_segment_record(s, 9, &r), "record 9");
	ok(r.type == FERRY_REC_MARKER && r.consistency == FERRY_CONSISTENCY_APP &&
		   r.time_ns == T0 - 5,
	   "app marker record");
	ok(ferry_segment_record(s, 10, &r) == -ERANGE, "past the last record is -ERANGE");
	ok(ferry_segment_record(s, UINT32_MAX, &r) == -ERANGE, "far past the last is -ERANGE");

	/* A chain: the next segment names this one. */
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w2 = NULL;
	ok_r(ferry_segment_writer_new("vm-1", 8, &pi->digest, &w2), "next writer");
	_cleanup_free_ void *buf2 = NULL;
	size_t len2;
	struct ferry_segment_info wi2;
	ok_r(ferry_segment_writer_finish(w2, &buf2, &len2, &wi2), "finish empty segment");
	_cleanup_(ferry_segment_freep) struct ferry_segment *s2 = NULL;
	ok_r(ferry_segment_parse(buf2, len2, &s2), "parse empty segment");
	ok(s2 && ferry_id_equal(&ferry_segment_info(s2)->prev, &pi->digest) &&
		   ferry_segment_info(s2)->nrecords == 0,
	   "empty segment links to its predecessor");
}

static void test_big(void)
{
	const size_t n = 8 * MiB;
	_cleanup_free_ uint8_t *rnd = malloc(n), *rep = malloc(n);
	if (!rnd || !rep)
		abort();
	fill(rnd, n, 3);
	for (size_t i = 0; i < n; i++)
		rep[i] = (uint8_t)(i / 4096);

	for (int pass = 0; pass < 2; pass++) {
		const uint8_t *data = pass ? rep : rnd;
		_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
		ok_r(ferry_segment_writer_new("big", 1, NULL, &w), "big writer %d", pass);
		ok_r(ferry_segment_writer_add_disk(w, 1, "disk", 1ull << 40), "big disk");
		ok_r(ferry_segment_writer_add_data(w, 1, (1ull << 40) - n, data, n),
		     "8 MiB data record");
		ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0), "marker");
		_cleanup_free_ void *buf = NULL;
		size_t len;
		ok_r(ferry_segment_writer_finish(w, &buf, &len, NULL), "finish big");
		if (pass)
			ok(len < n / 10, "compressible data is stored compressed (%zu bytes)", len);
		else
			ok(len < n + 300, "incompressible data is stored raw (%zu bytes)", len);
		_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
		ok_r(ferry_segment_parse(buf, len, &s), "parse big");
		struct ferry_record r = { 0 };
		ok(s && ferry_segment_record(s, 1, &r) == 0 && r.type == FERRY_REC_DATA &&
			   r.length == n && memcmp(r.data, data, n) == 0,
		   "big data survives");
	}

	/* Many small records: the record table is built once, lookups are O(1). */
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
	ok_r(ferry_segment_writer_new("many", 1, NULL, &w), "many writer");
	ok_r(ferry_segment_writer_add_disk(w, 0, "d", 1ull << 40), "many disk");
	int bad = 0;
	for (uint64_t i = 0; i < 200000; i++)
		if (ferry_segment_writer_add_zero(w, 0, i * 8192, 4096) < 0)
			bad++;
	ok(bad == 0, "200000 zero records");
	_cleanup_free_ void *buf = NULL;
	size_t len;
	ok_r(ferry_segment_writer_finish(w, &buf, &len, NULL), "finish many");
	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(buf, len, &s), "parse many");
	struct ferry_record r = { 0 };
	ok(s && ferry_segment_record(s, 200000, &r) == 0 && r.type == FERRY_REC_ZERO &&
		   r.offset == 199999ull * 8192,
	   "last of many");
}

/* Chunked writing (format 2.0): pieces cut at chunk boundaries, each
 * compressed on its own where that helps, the same bytes on any number of
 * threads, and every piece unpacks to what was written. */
static void test_chunked(void)
{
	const size_t n = 1 * MiB + 3 * 4096; /* not chunk aligned at either end */
	const uint64_t at = 5 * 4096;
	_cleanup_free_ uint8_t *d = malloc(n), *back = malloc(n);
	if (!d || !back)
		abort();
	/* Half text-like, half random: both DATAZ and raw DATA come out. */
	for (size_t i = 0; i < n / 2; i++)
		d[i] = (uint8_t)("abcabd\n"[i % 7] + (i / 4096) % 3);
	fill(d + n / 2, n - n / 2, 9);

	_cleanup_free_ void *seg0 = NULL, *seg1 = NULL;
	void **seg[2] = { &seg0, &seg1 };
	size_t len[2];
	for (int t = 0; t < 2; t++) {
		_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
		ok_r(ferry_segment_writer_new("vm", 1, NULL, &w), "chunked writer %d", t);
		ok(ferry_segment_writer_set_chunking(w, 3 * 4096) == -EINVAL &&
			   ferry_segment_writer_set_chunking(w, 2048) == -EINVAL &&
			   ferry_segment_writer_set_chunking(w, 8 * MiB) == -EINVAL,
		   "chunk sizes that are no power of two from 4 KiB to 4 MiB are refused");
		ok_r(ferry_segment_writer_set_chunking(w, 65536), "chunking at 64 KiB");
		ferry_segment_writer_set_workers(w, t ? 3 : 1);
		ok_r(ferry_segment_writer_add_disk(w, 0, "vda", 64 * MiB), "disk");
		ok_r(ferry_segment_writer_add_data(w, 0, at, d, n), "data");
		ok_r(ferry_segment_writer_add_zero(w, 0, 32 * MiB, 65536), "zero");
		ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_APP, T0 + 42), "marker");
		ok_r(ferry_segment_writer_finish(w, seg[t], &len[t], NULL), "finish chunked %d", t);
	}
	/* created_ns differs; everything after the header must not. */
	ok(len[0] == len[1] &&
		   memcmp((uint8_t *)seg0 + 64, (uint8_t *)seg1 + 64, len[0] - 64 - 40) == 0,
	   "one thread and three write the same segment");
	ok(get_le16((uint8_t *)seg0 + 8) == 2, "a chunked segment is format 2");

	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(seg0, len[0], &s), "parse chunked");
	if (!s)
		return;
	uint32_t nrec = ferry_segment_info(s)->nrecords;
	uint64_t next = at;
	int cut_ok = 1, zcount = 0, rawcount = 0, unpack_ok = 1;
	for (uint32_t i = 1; i < nrec; i++) {
		struct ferry_record r;
		if (ferry_segment_record(s, i, &r) < 0)
			abort();
		if (r.type != FERRY_REC_DATA && r.type != FERRY_REC_DATAZ)
			continue;
		/* Each piece ends at a chunk boundary or at the end of the data. */
		uint64_t end = r.offset + r.length;
		if (r.offset != next || r.length > 65536 || (end % 65536 && end != at + n))
			cut_ok = 0;
		next = end;
		uint8_t *dst = back + (r.offset - at);
		if (r.type == FERRY_REC_DATAZ) {
			zcount++;
			if (ferry_record_unpack(&r, dst) < 0)
				unpack_ok = 0;
		} else {
			rawcount++;
			memcpy(dst, r.data, r.length);
		}
	}
	ok(cut_ok && next == at + n, "pieces are cut at 64 KiB boundaries and cover the data");
	ok(zcount > 0 && rawcount > 0, "text as DATAZ (%d), random data raw (%d)", zcount,
	   rawcount);
	ok(unpack_ok && memcmp(back, d, n) == 0, "the pieces give back the data");

	/* A frame whose content is damaged behind a valid header. */
	struct ferry_record r;
	for (uint32_t i = 0; i < nrec; i++)
		if (ferry_segment_record(s, i, &r) == 0 && r.type == FERRY_REC_DATAZ)
			break;
	_cleanup_free_ uint8_t *bad = malloc(r.frame_len);
	if (!bad)
		abort();
	memcpy(bad, r.frame, r.frame_len);
	bad[r.frame_len / 2] ^= 0x5a;
	bad[r.frame_len / 2 + 1] ^= 0xa5;
	r.frame = bad;
	ok(ferry_record_unpack(&r, back) == -EBADMSG, "a damaged frame does not unpack");
	struct ferry_record notz = { .type = FERRY_REC_DATA };
	ok(ferry_record_unpack(&notz, back) == -EINVAL, "only DATAZ records unpack");
}

/* The major version a finished segment says it is. */
static unsigned major_of(const void *buf)
{
	return get_le16((const uint8_t *)buf + 8);
}

/* Group markers: format 3.0 for the segment that holds one, the round back
 * out of the parser, ordinary markers beside it untouched. */
static void test_group(void)
{
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
	ok_r(ferry_segment_writer_new("db1", 1, NULL, &w), "writer for group markers");
	ok_r(ferry_segment_writer_add_disk(w, 0, "vda", MiB), "disk");
	ok(ferry_segment_writer_add_group_marker(w, FERRY_CONSISTENCY_CRASH, T0, 0) == -EINVAL,
	   "round 0 is no group round");
	ok(ferry_segment_writer_add_group_marker(w, FERRY_CONSISTENCY_CRASH, T0,
						 FERRY_GROUP_ROUND_MAX + 1) == -EINVAL,
	   "a round over FERRY_GROUP_ROUND_MAX is refused");
	ok(ferry_segment_writer_add_group_marker(w, FERRY_CONSISTENCY_CRASH, 0, 7) == -ERANGE,
	   "a group marker's time obeys the marker rules");
	ok(ferry_segment_writer_add_group_marker(w, 3, T0, 7) == -EINVAL,
	   "and so does its consistency");
	ok(ferry_segment_writer_size(w) == 19 + 1 + 3, "refusals added nothing");

	_cleanup_free_ void *plain = NULL;
	size_t plain_len;
	ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0), "ordinary marker");
	ok_r(ferry_segment_writer_finish(w, &plain, &plain_len, NULL), "finish without a group");
	ok(major_of(plain) == 1, "no group marker: format 1.0 as before");

	ok_r(ferry_segment_writer_add_group_marker(w, FERRY_CONSISTENCY_APP, T0 + 1,
						   FERRY_GROUP_ROUND_MAX),
	     "group marker with the largest round");
	_cleanup_free_ void *buf = NULL;
	size_t len;
	ok_r(ferry_segment_writer_finish(w, &buf, &len, NULL), "finish with a group marker");
	ok(major_of(buf) == 3 && get_le16((uint8_t *)buf + 10) == 0,
	   "a segment with a group marker is format 3.0");
	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(buf, len, &s), "3.0 parses");
	struct ferry_record r1, r2;
	ok(ferry_segment_record(s, 1, &r1) == 0 && r1.type == FERRY_REC_MARKER &&
		   r1.group_round == 0 && r1.time_ns == T0 && r1.offset == 0,
	   "the ordinary marker has no group round");
	ok(ferry_segment_record(s, 2, &r2) == 0 && r2.type == FERRY_REC_MARKER &&
		   r2.group_round == FERRY_GROUP_ROUND_MAX &&
		   r2.consistency == FERRY_CONSISTENCY_APP && r2.time_ns == T0 + 1 &&
		   r2.offset == 0 && r2.length == 0 && r2.disk == 0,
	   "the group marker gives its round, nothing else moved");

	/* A reset starts a segment without group markers. */
	ok_r(ferry_segment_writer_reset(w, 2, &ferry_segment_info(s)->digest), "reset");
	ok_r(ferry_segment_writer_add_disk(w, 0, "vda", MiB), "disk again");
	ok_r(ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_CRASH, T0 + 2), "marker");
	_cleanup_free_ void *after = NULL;
	ok_r(ferry_segment_writer_finish(w, &after, &len, NULL), "finish after reset");
	ok(major_of(after) == 1, "reset forgets the group marker: 1.0 again");

	/* Chunking and groups: 3.0, DATAZ inside. */
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *c = NULL;
	uint8_t text[8192];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (uint8_t) "group "[i % 6];
	ok_r(ferry_segment_writer_new("db1", 1, NULL, &c), "chunking writer");
	ok_r(ferry_segment_writer_set_chunking(c, 4096), "chunking");
	ok_r(ferry_segment_writer_add_disk(c, 0, "vda", MiB), "disk");
	ok_r(ferry_segment_writer_add_data(c, 0, 0, text, sizeof(text)), "data");
	ok_r(ferry_segment_writer_add_group_marker(c, FERRY_CONSISTENCY_CRASH, T0, 9), "group");
	_cleanup_free_ void *cb = NULL;
	ok_r(ferry_segment_writer_finish(c, &cb, &len, NULL), "finish chunked");
	_cleanup_(ferry_segment_freep) struct ferry_segment *cs = NULL;
	struct ferry_record d, m;
	ok(major_of(cb) == 3 && ferry_segment_parse(cb, len, &cs) == 0 &&
		   ferry_segment_record(cs, 1, &d) == 0 && d.type == FERRY_REC_DATAZ &&
		   ferry_segment_record(cs, 3, &m) == 0 && m.group_round == 9,
	   "chunked data beside a group marker: 3.0 with DATAZ records");
}

static void test_writer_refuses(void)
{
	struct ferry_segment_writer *w = NULL;
	struct ferry_id prev;
	ferry_sha256("x", 1, &prev);
	ok(ferry_segment_writer_new("bad/name", 1, NULL, &w) == -EINVAL, "vm name with slash");
	ok(ferry_segment_writer_new("", 1, NULL, &w) == -EINVAL, "empty vm name");
	ok(ferry_segment_writer_new(".vm", 1, NULL, &w) == -EINVAL, "vm name with leading dot");
	ok(ferry_segment_writer_new("vm", 0, NULL, &w) == -EINVAL, "seq 0");
	ok(ferry_segment_writer_new("vm", 1, &prev, &w) == -EINVAL, "seq 1 with a prev");
	ok(ferry_segment_writer_new("vm", 2, NULL, &w) == -EINVAL, "seq 2 without a prev");
	ok(w == NULL, "nothing returned on refusal");

	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *v = NULL;
	ok_r(ferry_segment_writer_new("vm", 2, &prev, &v), "writer");
	uint8_t blk[8192] = { 0 };
	ok(ferry_segment_writer_add_data(v, 0, 0, blk, 4096) == -EINVAL,
	   "data for undeclared disk");
	ok(ferry_segment_writer_add_disk(v, 0, "bad name", 4096) == -EINVAL,
	   "disk name with space");
	ok(ferry_segment_writer_add_disk(v, 0, "-x", 4096) == -EINVAL,
	   "disk name with leading dash");
	ok_r(ferry_segment_writer_add_disk(v, 0, "vda", 64 * 1024), "disk");
	uint64_t size = ferry_segment_writer_size(v);
	ok(ferry_segment_writer_add_disk(v, 0, "vdb", 4096) == -EINVAL,
	   "redeclare with another name");
	ok(ferry_segment_writer_add_disk(v, 1, "vda", 4096) == -EINVAL, "second index, same name");
	ok(ferry_segment_writer_add_disk(v, 1, "vdb", 1ull << 63) == -EFBIG, "absurd disk size");
	ok(ferry_segment_writer_add_disk(v, 1, "vdb", FERRY_DISK_SIZE_MAX + 1) == -EFBIG,
	   "a disk one byte over FERRY_DISK_SIZE_MAX is -EFBIG");
	ok(ferry_segment_writer_add_data(v, 0, 512, blk, 4096) == -EINVAL, "misaligned offset");
	ok(ferry_segment_writer_add_data(v, 0, 4096, blk, 512) == -EINVAL, "misaligned length");
	ok(ferry_segment_writer_add_data(v, 0, 4096, blk, 0) == -EINVAL, "zero length");
	ok(ferry_segment_writer_add_zero(v, 0, 4095, 4096) == -EINVAL, "misaligned zero");
	ok(ferry_segment_writer_add_trim(v, 0, 0, 100) == -EINVAL, "misaligned trim");
	ok(ferry_segment_writer_add_data(v, 0, 60 * 1024, blk, 8192) == -EINVAL,
	   "data past the end");
	ok(ferry_segment_writer_add_zero(v, 0, UINT64_MAX - 4095, 4096) == -EINVAL,
	   "offset overflow");
	ok(ferry_segment_writer_add_zero(v, 0, 4096, UINT64_MAX - 4095) == -EINVAL,
	   "length overflow");
	ok(ferry_segment_writer_add_marker(v, 0, 1) == -EINVAL, "unknown consistency 0");
	ok(ferry_segment_writer_add_marker(v, 3, T0) == -EINVAL, "unknown consistency 3");
	/* Marker times: a clock outside 2000..2200 is wrong, and its markers
	 * would overflow differences and break the sort order of point ids. */
	const int64_t bad_times[] = {
		INT64_MIN, -5, 0, 1, FERRY_MARKER_TIME_MIN_NS - 1, FERRY_MARKER_TIME_MAX_NS,
		INT64_MAX
	};
	int refused = 0;
	for (size_t i = 0; i < ARRAY_SIZE(bad_times); i++)
		refused += ferry_segment_writer_add_marker(v, FERRY_CONSISTENCY_CRASH,
							   bad_times[i]) == -ERANGE;
	ok(refused == (int)ARRAY_SIZE(bad_times), "marker times outside 2000..2200 are -ERANGE");
	ok(ferry_segment_writer_size(v) == size, "refusals add nothing");
	ok_r(ferry_segment_writer_add_marker(v, FERRY_CONSISTENCY_CRASH, FERRY_MARKER_TIME_MIN_NS),
	     "the first time of 2000 is a marker time");
	ok_r(ferry_segment_writer_add_marker(v, FERRY_CONSISTENCY_CRASH,
					     FERRY_MARKER_TIME_MAX_NS - 1),
	     "the last time before 2200 is a marker time");

	/* The size bound: refused before the buffer is read. */
	ok_r(ferry_segment_writer_add_disk(v, 2, "huge", 1ull << 40), "huge disk");
	ok(ferry_segment_writer_add_data(v, 2, 0, blk, 2ull * FERRY_SEGMENT_MAX_PLAIN) == -E2BIG,
	   "data beyond the segment bound is -E2BIG");

	_cleanup_free_ void *buf = NULL;
	size_t len;
	ok_r(ferry_segment_writer_finish(v, &buf, &len, NULL), "finish after refusals");
	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(buf, len, &s), "and it parses");
	ok(s && ferry_segment_info(s)->nrecords == 4, "only the accepted records");
}

static void test_damage(int compressible)
{
	_cleanup_(ferry_segment_writer_freep) struct ferry_segment_writer *w = NULL;
	ok_r(ferry_segment_writer_new("v", 1, NULL, &w), "small writer");
	uint8_t blk[4096];
	if (compressible)
		memset(blk, 'x', sizeof(blk));
	else
		fill(blk, sizeof(blk), 9);
	ferry_segment_writer_add_disk(w, 0, "d", 8192);
	ferry_segment_writer_add_data(w, 0, 4096, blk, 4096);
	ferry_segment_writer_add_zero(w, 0, 0, 4096);
	ferry_segment_writer_add_marker(w, FERRY_CONSISTENCY_APP, T0 + 99);
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	ok_r(ferry_segment_writer_finish(w, (void **)&buf, &len, NULL), "small segment");
	ok(compressible ? len < 4096 : len > 4096, "small segment is %s (%zu bytes)",
	   compressible ? "compressed" : "raw", len);

	int bad = 0;
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit += 7) {
			buf[i] ^= (uint8_t)(1u << bit);
			if (!parse_fails(buf, len, -EBADMSG))
				bad++;
			buf[i] ^= (uint8_t)(1u << bit);
		}
	ok(bad == 0, "every flipped byte of %zu is -EBADMSG (%d not)", len, bad);

	bad = 0;
	for (size_t n = 0; n < len; n++)
		if (!parse_fails(buf, n, -EBADMSG))
			bad++;
	ok(bad == 0, "every truncation is -EBADMSG (%d not)", bad);
	ok(parse_fails(buf + 1, len - 1, -EBADMSG), "missing first byte");
	_cleanup_free_ uint8_t *longer = malloc(len + 1);
	memcpy(longer, buf, len);
	longer[len] = 0;
	ok(parse_fails(longer, len + 1, -EBADMSG), "a trailing byte is -EBADMSG");
	ok(parse_fails(NULL, 0, -EBADMSG), "NULL is -EBADMSG");

	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	ok_r(ferry_segment_parse(buf, len, &s), "undamaged copy still parses");
}

/* ---- forging: the digest is right, the content is not ---- */

struct forge {
	const char *vm;
	uint16_t major, minor;
	uint32_t hdr_extra; /* extra header bytes (a later minor version) */
	uint64_t seq;
	int prev_null;
	uint32_t nrecords, flags;
	uint8_t comp;
	int64_t plain_adjust;  /* added to the declared plain length */
	int64_t stored_adjust; /* added to the declared stored length */
	int32_t hdrlen_adjust;
};

static void forge_default(struct forge *f)
{
	*f = (struct forge){ .vm = "vm", .major = 1, .seq = 1, .prev_null = 1 };
}

static uint8_t *forge_build(const struct forge *f, const void *payload, size_t plen,
			    size_t *ret_len)
{
	size_t vl = strlen(f->vm);
	size_t hlen = (90 + vl + 7) / 8 * 8 + f->hdr_extra;
	size_t len = hlen + plen + 40;
	uint8_t *b = calloc(1, len);
	if (!b)
		abort();
	memcpy(b, "FERRYSEG", 8);
	put_le16(b + 8, f->major);
	put_le16(b + 10, f->minor);
	put_le32(b + 12, (uint32_t)(hlen + f->hdrlen_adjust));
	put_le64(b + 16, f->seq);
	if (!f->prev_null)
		memset(b + 24, 0xab, 32);
	put_le64(b + 56, 42);
	put_le32(b + 64, f->nrecords);
	put_le32(b + 68, f->flags);
	put_le64(b + 72, plen + f->plain_adjust);
	put_le64(b + 80, plen + f->stored_adjust);
	b[88] = f->comp;
	b[89] = (uint8_t)vl;
	memcpy(b + 90, f->vm, vl);
	if (f->hdr_extra)
		memset(b + hlen - f->hdr_extra, 0x5a, f->hdr_extra);
	memcpy(b + hlen, payload, plen);
	struct ferry_id d;
	ferry_sha256(b, hlen + plen, &d);
	memcpy(b + hlen + plen, d.b, 32);
	memcpy(b + hlen + plen + 32, "FERRYEND", 8);
	*ret_len = len;
	return b;
}

/* A tiny record encoder for the forged payloads. */
struct pl {
	uint8_t b[1 << 16];
	size_t n;
	uint32_t count;
};

static void pl_common(struct pl *p, uint8_t type, uint16_t disk, uint64_t off, uint64_t len)
{
	p->b[p->n] = type;
	put_le16(p->b + p->n + 1, disk);
	put_le64(p->b + p->n + 3, off);
	put_le64(p->b + p->n + 11, len);
	p->n += 19;
	p->count++;
}

static void pl_disk(struct pl *p, uint16_t disk, const char *name, uint64_t size)
{
	pl_common(p, 1, disk, 0, size);
	p->b[p->n++] = (uint8_t)strlen(name);
	memcpy(p->b + p->n, name, strlen(name));
	p->n += strlen(name);
}

static void pl_data(struct pl *p, uint16_t disk, uint64_t off, uint64_t len, size_t actual)
{
	pl_common(p, 2, disk, off, len);
	memset(p->b + p->n, 0x11, actual);
	p->n += actual;
}

static void pl_marker_at(struct pl *p, uint8_t c, int64_t time_ns)
{
	pl_common(p, 5, 0, 0, 0);
	p->b[p->n] = c;
	put_le64(p->b + p->n + 1, (uint64_t)time_ns);
	p->n += 9;
}

static void pl_marker(struct pl *p, uint8_t c)
{
	pl_marker_at(p, c, T0);
}

/* A marker whose offset carries a group round (format 3.0). */
static void pl_group_marker(struct pl *p, uint8_t c, uint64_t round)
{
	size_t at = p->n;
	pl_marker_at(p, c, T0);
	put_le64(p->b + at + 3, round);
}

/* Builds a forged raw segment from f and p and checks the parse result. */
static int forge_check(struct forge *f, const struct pl *p, int expect)
{
	size_t len;
	if (!f->nrecords)
		f->nrecords = p->count;
	_cleanup_free_ uint8_t *b = forge_build(f, p->b, p->n, &len);
	if (expect == 0) {
		_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
		return ferry_segment_parse(b, len, &s) == 0;
	}
	return parse_fails(b, len, expect);
}

/* Payloads whose digest will be right but whose records are not. */
static const char *bad_case(int i, struct pl *q)
{
	switch (i) {
	case 0:
		pl_disk(q, 0, "d", MiB);
		pl_data(q, 0, 512, 4096, 4096);
		return "misaligned data offset";
	case 1:
		pl_disk(q, 0, "d", MiB);
		pl_data(q, 0, 0, 4000, 4000);
		return "misaligned data length";
	case 2:
		pl_disk(q, 0, "d", MiB);
		pl_data(q, 0, 0, 0, 0);
		return "zero-length data";
	case 3:
		pl_disk(q, 0, "d", MiB);
		pl_data(q, 0, 0, 8192, 4096);
		return "data length beyond payload";
	case 4:
		pl_disk(q, 0, "d", MiB);
		pl_data(q, 1, 0, 4096, 4096);
		return "data for undeclared disk";
	case 5:
		pl_data(q, 0, 0, 4096, 4096);
		pl_disk(q, 0, "d", MiB);
		return "data before its disk";
	case 6:
		pl_disk(q, 0, "d", 8192);
		pl_data(q, 0, 8192, 4096, 4096);
		return "data past the disk end";
	case 7:
		pl_disk(q, 0, "d", MiB);
		pl_common(q, 3, 0, UINT64_MAX - 4095, 8192);
		return "zero range overflow";
	case 8:
		pl_disk(q, 0, "d", MiB);
		pl_common(q, 4, 0, 0, 100);
		return "misaligned trim";
	case 9:
		pl_disk(q, 0, "d", MiB);
		pl_common(q, 0, 0, 0, 4096);
		return "unknown record type 0";
	case 10:
		pl_disk(q, 0, "d", MiB);
		pl_common(q, 6, 0, 0, 4096);
		return "unknown record type 6";
	case 11:
		pl_disk(q, 0, "../x", MiB);
		return "invalid disk name";
	case 12:
		pl_disk(q, 0, "ab", MiB);
		q->b[q->n - 1] = 0;
		return "disk name with NUL";
	case 13:
		pl_disk(q, 0, "", MiB);
		return "empty disk name";
	case 14:
		pl_disk(q, 0, "abc", MiB);
		q->b[q->n - 4] = 9;
		return "disk name past the payload";
	case 15:
		pl_disk(q, 0, "d", MiB);
		put_le64(q->b + 3, 4096);
		return "disk with an offset";
	case 16:
		pl_disk(q, 0, "d", MiB);
		pl_disk(q, 0, "e", MiB);
		return "disk renamed";
	case 17:
		pl_disk(q, 0, "d", MiB);
		pl_disk(q, 1, "d", MiB);
		return "two disks one name";
	case 18:
		pl_marker(q, 0);
		return "marker consistency 0";
	case 19:
		pl_marker(q, 3);
		return "marker consistency 3";
	case 20:
		pl_marker(q, 1);
		put_le64(q->b + 11, 4096);
		return "marker with a length";
	case 21:
		pl_marker(q, 1);
		q->n -= 1;
		return "truncated marker";
	case 22:
		pl_disk(q, 0, "d", MiB);
		q->b[q->n++] = 3;
		q->count++;
		return "truncated record header";
	case 23:
		pl_marker_at(q, 1, FERRY_MARKER_TIME_MIN_NS - 1);
		return "marker time before 2000";
	case 24:
		pl_marker_at(q, 1, FERRY_MARKER_TIME_MAX_NS);
		return "marker time in 2200";
	case 25:
		pl_marker_at(q, 2, INT64_MIN);
		return "marker time INT64_MIN";
	case 26:
		pl_disk(q, 0, "d", FERRY_DISK_SIZE_MAX + 4096);
		return "disk larger than FERRY_DISK_SIZE_MAX";
	case 27:
		pl_disk(q, 0, "d", MiB);
		pl_disk(q, 0, "d", UINT64_MAX);
		return "disk redeclared with an absurd size";
	default:
		return NULL;
	}
}

static void test_forged(void)
{
	struct forge f;
	_cleanup_free_ struct pl *p = calloc(1, sizeof(*p));

	forge_default(&f);
	pl_disk(p, 0, "vda", 1 * MiB);
	pl_data(p, 0, 8192, 4096, 4096);
	pl_marker(p, 1);
	ok(forge_check(&f, p, 0), "forged good segment parses (the test encoder agrees)");

	forge_default(&f);
	f.hdr_extra = 16;
	f.minor = 7;
	ok(forge_check(&f, p, 0), "a later minor version with a longer header parses");

	forge_default(&f);
	f.major = 2;
	ok(forge_check(&f, p, 0), "major 2 (chunked data) reads major 1 records");
	f.major = 3;
	ok(forge_check(&f, p, 0), "major 3 (group markers) reads major 1 records");
	f.major = 4;
	ok(forge_check(&f, p, -EPROTONOSUPPORT), "major 4 is -EPROTONOSUPPORT");
	f.major = 0;
	ok(forge_check(&f, p, -EPROTONOSUPPORT), "major 0 is -EPROTONOSUPPORT");
	f.major = 0xffff;
	f.hdrlen_adjust = 1000000;
	ok(forge_check(&f, p, -EPROTONOSUPPORT), "an unknown major is refused before its header");

	/* A group round is damage before 3.0, and past 2^63 - 1 in it. */
	memset(p, 0, sizeof(*p));
	pl_disk(p, 0, "vda", 1 * MiB);
	pl_group_marker(p, 1, 42);
	forge_default(&f);
	ok(forge_check(&f, p, -EBADMSG), "a group round in a 1.0 marker is damage");
	f.major = 2;
	ok(forge_check(&f, p, -EBADMSG), "a group round in a 2.0 marker is damage");
	f.minor = 1;
	ok(forge_check(&f, p, -EBADMSG), "and in a 2.1 one: a minor gives it no meaning");
	forge_default(&f);
	f.major = 3;
	ok(forge_check(&f, p, 0), "a group round in a 3.0 marker parses");
	memset(p, 0, sizeof(*p));
	pl_group_marker(p, 2, UINT64_C(1) << 63);
	forge_default(&f);
	f.major = 3;
	ok(forge_check(&f, p, -EBADMSG), "a group round of 2^63 is damage");
	memset(p, 0, sizeof(*p));
	pl_group_marker(p, 1, 1);
	put_le64(p->b + 11, 4096);
	forge_default(&f);
	f.major = 3;
	ok(forge_check(&f, p, -EBADMSG), "a 3.0 marker with a length is still damage");
	memset(p, 0, sizeof(*p));
	pl_disk(p, 0, "vda", 1 * MiB);
	pl_data(p, 0, 8192, 4096, 4096);
	pl_marker(p, 1);

	forge_default(&f);
	f.seq = 0;
	ok(forge_check(&f, p, -EBADMSG), "seq 0");
	forge_default(&f);
	f.prev_null = 0;
	ok(forge_check(&f, p, -EBADMSG), "seq 1 with a prev");
	forge_default(&f);
	f.seq = 5;
	ok(forge_check(&f, p, -EBADMSG), "seq 5 without a prev");
	forge_default(&f);
	f.vm = "a/b";
	ok(forge_check(&f, p, -EBADMSG), "invalid vm name");
	forge_default(&f);
	f.flags = 1;
	ok(forge_check(&f, p, -EBADMSG), "unknown flag");
	forge_default(&f);
	f.comp = 2;
	ok(forge_check(&f, p, -EBADMSG), "unknown compression");
	forge_default(&f);
	f.comp = 1;
	ok(forge_check(&f, p, -EBADMSG), "raw bytes claimed as zstd");
	forge_default(&f);
	f.plain_adjust = 1;
	ok(forge_check(&f, p, -EBADMSG), "raw with plain != stored");
	forge_default(&f);
	f.stored_adjust = -1;
	ok(forge_check(&f, p, -EBADMSG), "stored length disagrees with the buffer");
	forge_default(&f);
	f.hdrlen_adjust = -8;
	ok(forge_check(&f, p, -EBADMSG), "header length too short for the name");
	forge_default(&f);
	f.hdrlen_adjust = 8;
	ok(forge_check(&f, p, -EBADMSG), "header length past the header");
	forge_default(&f);
	f.nrecords = p->count + 1;
	ok(forge_check(&f, p, -EBADMSG), "record count too high");
	forge_default(&f);
	f.nrecords = p->count - 1;
	ok(forge_check(&f, p, -EBADMSG), "record count too low (trailing bytes)");
	forge_default(&f);
	f.nrecords = UINT32_MAX;
	ok(forge_check(&f, p, -EBADMSG), "absurd record count");

	const char *what;
	for (int i = 0; memset(p, 0, sizeof(*p)), (what = bad_case(i, p)); i++) {
		forge_default(&f);
		ok(forge_check(&f, p, -EBADMSG), "forged: %s", what);
	}

	/* 257 distinct disks exceed the per-segment table. */
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < 257; i++) {
		char n[16];
		snprintf(n, sizeof(n), "d%d", i);
		pl_disk(p, (uint16_t)i, n, MiB);
	}
	forge_default(&f);
	ok(forge_check(&f, p, -EBADMSG), "forged: too many disks");
}

/* ---- golden files ---- */

static char *data_dir(void)
{
	_cleanup_free_ char *f = strdup(__FILE__);
	char *d = NULL;
	if (!f || asprintf(&d, "%s/../data/segment", dirname(f)) < 0)
		abort();
	return d;
}

static void check_good_basic(const struct ferry_segment *s)
{
	/* good/basic.seg is written from the spec by tests/data/segment/make-golden.py. */
	const struct ferry_segment_info *i = ferry_segment_info(s);
	struct ferry_record r;
	ok(strcmp(i->vm, "web-1") == 0 && i->seq == 1 && ferry_id_is_null(&i->prev) &&
		   i->created_ns == 1700000000000000000LL && i->nrecords == 5,
	   "good/basic.seg header");
	ok(ferry_segment_record(s, 0, &r) == 0 && r.type == FERRY_REC_DISK && r.disk == 0 &&
		   strcmp(r.name, "vda") == 0 && r.length == 1048576,
	   "good/basic.seg disk");
	uint8_t expect[4096];
	memset(expect, 0xa5, sizeof(expect));
	ok(ferry_segment_record(s, 1, &r) == 0 && r.type == FERRY_REC_DATA && r.offset == 8192 &&
		   r.length == 4096 && memcmp(r.data, expect, 4096) == 0,
	   "good/basic.seg data");
	ok(ferry_segment_record(s, 2, &r) == 0 && r.type == FERRY_REC_ZERO && r.offset == 65536 &&
		   r.length == 65536,
	   "good/basic.seg zero");
	ok(ferry_segment_record(s, 3, &r) == 0 && r.type == FERRY_REC_TRIM &&
		   r.offset == 1048576 - 4096 && r.length == 4096,
	   "good/basic.seg trim");
	ok(ferry_segment_record(s, 4, &r) == 0 && r.type == FERRY_REC_MARKER &&
		   r.consistency == FERRY_CONSISTENCY_CRASH && r.time_ns == 1700000000500000000LL,
	   "good/basic.seg marker");
}

static void check_good_chunked(const struct ferry_segment *s)
{
	struct ferry_record r;
	uint8_t plain[8192], expect[8192];
	for (size_t i = 0; i < sizeof(expect); i++)
		expect[i] = (uint8_t) "ferry "[i % 6];
	ok(ferry_segment_info(s)->nrecords == 4, "good/chunked.seg has 4 records");
	ok(ferry_segment_record(s, 1, &r) == 0 && r.type == FERRY_REC_DATAZ && r.offset == 65536 &&
		   r.length == 8192 && r.frame_len < 8192 && ferry_record_unpack(&r, plain) == 0 &&
		   memcmp(plain, expect, 8192) == 0,
	   "good/chunked.seg DATAZ unpacks to its text");
	ok(ferry_segment_record(s, 2, &r) == 0 && r.type == FERRY_REC_DATA && r.offset == 73728 &&
		   r.length == 4096,
	   "good/chunked.seg DATA beside it");
}

static void check_good_group(const struct ferry_segment *s)
{
	struct ferry_record r;
	ok(ferry_segment_info(s)->nrecords == 5, "good/group.seg has 5 records");
	ok(ferry_segment_record(s, 2, &r) == 0 && r.type == FERRY_REC_MARKER &&
		   r.group_round == 0 && r.consistency == FERRY_CONSISTENCY_CRASH &&
		   r.time_ns == 1700000000000000000LL,
	   "good/group.seg: an ordinary marker");
	ok(ferry_segment_record(s, 4, &r) == 0 && r.type == FERRY_REC_MARKER &&
		   r.group_round == 42 && r.consistency == FERRY_CONSISTENCY_APP &&
		   r.time_ns == 1700000060000000000LL,
	   "good/group.seg: the cut of group round 42");
}

static void test_golden(void)
{
	_cleanup_free_ char *dir = data_dir();
	const char *sub[] = { "good", "corrupt" };
	for (size_t k = 0; k < 2; k++) {
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "%s/%s", dir, sub[k]) < 0)
			abort();
		DIR *d = opendir(path);
		ok(d != NULL, "open golden directory %s", path);
		if (!d)
			continue;
		unsigned n = 0;
		struct dirent *de;
		while ((de = readdir(d))) {
			size_t l = strlen(de->d_name);
			if (l < 5 || strcmp(de->d_name + l - 4, ".seg") != 0)
				continue;
			_cleanup_free_ char *fp = NULL;
			_cleanup_free_ void *buf = NULL;
			size_t len;
			if (asprintf(&fp, "%s/%s", path, de->d_name) < 0)
				abort();
			if (ferry_read_file(fp, &buf, &len) < 0) {
				ok(0, "read %s", fp);
				continue;
			}
			n++;
			_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
			int r = ferry_segment_parse(buf, len, &s);
			if (k == 0) {
				ok_r(r, "good/%s parses", de->d_name);
				if (r >= 0 && strcmp(de->d_name, "basic.seg") == 0)
					check_good_basic(s);
				if (r >= 0 && strcmp(de->d_name, "chunked.seg") == 0)
					check_good_chunked(s);
				if (r >= 0 && strcmp(de->d_name, "group.seg") == 0)
					check_good_group(s);
			} else {
				int expect = strncmp(de->d_name, "future-", 7) == 0 ?
						     -EPROTONOSUPPORT :
						     -EBADMSG;
				ok(r == expect, "corrupt/%s is %s (got %d)", de->d_name,
				   expect == -EBADMSG ? "-EBADMSG" : "-EPROTONOSUPPORT", r);
			}
		}
		closedir(d);
		ok(n > 0, "golden %s files found (%u)", sub[k], n);
	}
}

/* A length over FERRY_SEGMENT_MAX_SIZE is refused before a single byte is
 * read: the buffer here is memory that faults on any access, in a child so
 * that a read shows as a failed check rather than a crashed test. */
static void test_oversize(void)
{
	size_t len = FERRY_SEGMENT_MAX_SIZE + 1;
	void *map = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ok(map != MAP_FAILED, "map %zu bytes no one may read", len);
	if (map == MAP_FAILED)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		struct ferry_segment *s = NULL;
		_exit(ferry_segment_parse(map, len, &s) == -EBADMSG && !s ? 0 : 1);
	}
	int status = 0;
	ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		   WEXITSTATUS(status) == 0,
	   "a segment over FERRY_SEGMENT_MAX_SIZE is -EBADMSG before any byte is read");
	munmap(map, len);
	ok(FERRY_SEGMENT_MAX_SIZE < 70u * MiB,
	   "the largest segment is a few tens of MiB (%u bytes)", FERRY_SEGMENT_MAX_SIZE);
}

int main(void)
{
	test_round_trip();
	test_big();
	test_chunked();
	test_writer_refuses();
	test_group();
	test_damage(0);
	test_damage(1);
	test_forged();
	test_oversize();
	test_golden();
	return tap_done();
}
