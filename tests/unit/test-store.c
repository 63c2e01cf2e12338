/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the store and its pack format: round trips of many objects
 * (compressible, incompressible, nearly all zero, tiny, maximal), dedup in
 * one pack, verification on read (bit flips and truncation on disk give
 * -EBADMSG), pack indexes, listing and deletion, the fd cache under many
 * packs and many threads, runs of neighbouring objects read at once (each
 * verified alone; one request through the fault seam), and the golden
 * packs in tests/data/pack.
 */
#include "ferry/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/blobs.h"
#include "ferry/util.h"
#include "pack-internal.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_store *, ferry_store_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_pack_writer *, ferry_pack_writer_free)

#define NOBJ 200

struct obj {
	uint8_t *data;
	size_t len;
	struct ferry_id id;
	struct ferry_loc loc;
	enum ferry_obj_type type;
};

static struct obj objs[NOBJ];

static void fill(struct obj *o, unsigned i)
{
	static const size_t sizes[] = { 65536, 4096, 1, 0, 12288, 100, FERRY_OBJ_MAX, 65536 };
	o->len = sizes[i % ARRAY_SIZE(sizes)];
	if (o->len == 0 && i != 3) /* one empty object; more would all share its id */
		o->len = 3;
	o->data = calloc(1, o->len ? o->len : 1);
	o->type = (enum ferry_obj_type)(1 + i % 3);
	switch (i % 4) {
	case 0: /* incompressible */
		for (size_t off = 0; off < o->len;) {
			ssize_t n = getrandom(o->data + off, MIN(o->len - off, (size_t)256), 0);
			off += n > 0 ? (size_t)n : 0;
		}
		break;
	case 1: /* text-like */
		for (size_t k = 0; k < o->len; k++)
			o->data[k] = (uint8_t)("ferry carries disks "[k % 20] + (k / 4096 + i) % 3);
		break;
	case 2: /* all zero but for a few bytes */
		if (o->len)
			o->data[o->len / 2] = (uint8_t)(i + 1);
		break;
	default: /* mostly zero, a random-ish prefix */
		for (size_t k = 0; k < MIN(o->len, (size_t)64); k++)
			o->data[k] = (uint8_t)(k * 37 + i);
	}
	if (o->len >= 4)
		memcpy(o->data, &i, sizeof(i)); /* distinct ids */
	ferry_sha256(o->data, o->len, &o->id);
}

struct packs {
	uint64_t ids[256];
	uint64_t sizes[256];
	unsigned n;
};

static int collect_pack(uint64_t pack, uint64_t size, void *ud)
{
	struct packs *p = ud;
	if (p->n < ARRAY_SIZE(p->ids)) {
		p->ids[p->n] = pack;
		p->sizes[p->n] = size;
	}
	p->n++;
	return 0;
}

static int loc_eq(const struct ferry_loc *a, const struct ferry_loc *b)
{
	return a->pack == b->pack && a->offset == b->offset && a->clen == b->clen &&
	       a->plen == b->plen && a->type == b->type;
}

struct index_check {
	unsigned n, matched;
};

static int check_index(const struct ferry_id *id, const struct ferry_loc *loc, void *ud)
{
	struct index_check *c = ud;
	c->n++;
	for (unsigned i = 0; i < NOBJ; i++)
		if (ferry_id_equal(&objs[i].id, id) && loc_eq(&objs[i].loc, loc)) {
			c->matched++;
			break;
		}
	return 0;
}

static int count_cb(const struct ferry_id *id, const struct ferry_loc *loc, void *ud)
{
	(*(unsigned *)ud)++;
	return 0;
}

static char *pack_path(const char *root, uint64_t pack)
{
	char *p;
	if (asprintf(&p, "%s/packs/%016llx.pack", root, (unsigned long long)pack) < 0)
		abort();
	return p;
}

static int flip_byte(const char *path, uint64_t off)
{
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	uint8_t b;
	if (fd < 0 || pread(fd, &b, 1, (off_t)off) != 1)
		return -1;
	b ^= 0x20;
	return pwrite(fd, &b, 1, (off_t)off) == 1 ? 0 : -1;
}

/* Readers hammer the same objects from many threads through one store. */
struct reader_arg {
	struct ferry_store *s;
	unsigned bad;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	uint8_t *buf = malloc(FERRY_OBJ_MAX);
	for (unsigned round = 0; buf && round < 3; round++)
		for (unsigned i = 0; i < NOBJ; i++) {
			if (objs[i].len == FERRY_OBJ_MAX && round > 0)
				continue;
			if (ferry_store_read(a->s, &objs[i].loc, &objs[i].id, buf, FERRY_OBJ_MAX) <
				    0 ||
			    memcmp(buf, objs[i].data, objs[i].len) != 0)
				a->bad++;
		}
	free(buf);
	return NULL;
}

static const char *data_dir(void)
{
	static char path[4096];
	const char *src = getenv("FERRY_SOURCE");
	if (src)
		snprintf(path, sizeof(path), "%s/tests/data/pack", src);
	else {
		char file[4096];
		snprintf(file, sizeof(file), "%s", __FILE__);
		snprintf(path, sizeof(path), "%s/../data/pack", dirname(file));
	}
	return path;
}

static void test_goldens(const char *tmp)
{
	const char *base = data_dir();
	printf("# golden packs in %s\n", base);
	_cleanup_free_ char *good = NULL, *corrupt = NULL, *root = NULL;
	if (asprintf(&good, "%s/good", base) < 0 || asprintf(&corrupt, "%s/corrupt", base) < 0 ||
	    asprintf(&root, "%s/golden-store", tmp) < 0)
		abort();

	_cleanup_(ferry_store_freep) struct ferry_store *s = NULL;
	ok_r(ferry_store_open(root, 1, &s), "open golden store");
	_cleanup_free_ char *packs = NULL;
	if (asprintf(&packs, "%s/packs", root) < 0)
		abort();
	ferry_mkdir_p(packs, 0755);

	unsigned ngood = 0, nbad = 0;
	DIR *d = opendir(good);
	ok(d != NULL, "open %s", good);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = NULL;
		void *buf = NULL;
		size_t len = 0;
		if (asprintf(&p, "%s/%s", good, de->d_name) < 0)
			abort();
		ok_r(ferry_read_file(p, &buf, &len), "read %s", de->d_name);
		unsigned n = 0;
		ok_r(pack_parse(buf, len, 1, count_cb, &n), "good %s parses", de->d_name);
		ok(n > 0, "good %s has objects", de->d_name);
		/* And through the store, as a pack on disk. */
		if (len >= PACK_HEADER_SIZE) {
			uint64_t id = get_le64((uint8_t *)buf + 16);
			_cleanup_free_ char *dst = pack_path(root, id);
			ok_r(ferry_write_file_atomic(dst, buf, len), "install %s", de->d_name);
			unsigned m = 0;
			ok_r(ferry_store_pack_index(s, id, 1, count_cb, &m), "store verifies %s",
			     de->d_name);
			ok(m == n, "same objects through the store");
		}
		free(buf);
		ngood++;
	}
	if (d)
		closedir(d);
	ok(ngood >= 1, "found %u good golden packs", ngood);

	d = opendir(corrupt);
	ok(d != NULL, "open %s", corrupt);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = NULL;
		void *buf = NULL;
		size_t len = 0;
		if (asprintf(&p, "%s/%s", corrupt, de->d_name) < 0)
			abort();
		ok_r(ferry_read_file(p, &buf, &len), "read %s", de->d_name);
		unsigned n = 0;
		int r = pack_parse(buf, len, 1, count_cb, &n);
		ok(r == -EBADMSG && n == 0, "corrupt %s fails cleanly (%d), no partial result",
		   de->d_name, r);
		free(buf);
		nbad++;
	}
	if (d)
		closedir(d);
	ok(nbad >= 1, "found %u corrupt golden packs", nbad);
}

/* Up to max objects from objs[start] on that lie back to back in the pack,
 * as a run for ferry_store_read_run, each with a buffer of its own. */
static size_t make_run(unsigned start, size_t max, struct ferry_store_read *rr)
{
	size_t n = 0;

	for (unsigned i = start; n < max && i < NOBJ; i++) {
		if (n > 0 && objs[i].loc.offset != ferry_store_entry_end(&rr[n - 1].loc))
			break;
		rr[n++] = (struct ferry_store_read){
			.loc = objs[i].loc,
			.id = &objs[i].id,
			.buf = malloc(objs[i].len + 1),
			.bufsize = objs[i].len,
			.r = 1,
		};
	}
	return n;
}

static void run_free(struct ferry_store_read *rr, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(rr[i].buf);
}

/* Whether object start + i of a run read back as r[i] says. */
static int run_check(const struct ferry_store_read *rr, size_t n, unsigned start, int bad)
{
	for (size_t i = 0; i < n; i++) {
		const struct obj *o = &objs[start + i];
		int want = (int)i == bad ? -EBADMSG : 0;

		if (rr[i].r != want || (want == 0 && memcmp(rr[i].buf, o->data, o->len) != 0))
			return 0;
	}
	return 1;
}

static int count_gets(const char *op, const char *name, void *ud)
{
	if (strcmp(op, "get_range") == 0 || strcmp(op, "get") == 0)
		(*(unsigned *)ud)++;
	return 0;
}

static void test_runs(struct ferry_store *s)
{
	struct ferry_store_read rr[6];
	unsigned gets = 0;
	size_t n = make_run(8, ARRAY_SIZE(rr), rr);

	ok(n >= 3, "a run of %zu neighbouring objects", n);
	ok(ferry_store_read_run(s, rr, n) == (int)n && run_check(rr, n, 8, -1),
	   "read at once, each verified");
	rr[1].id = &objs[0].id;
	ok(ferry_store_read_run(s, rr, n) == (int)n - 1 && run_check(rr, n, 8, 1),
	   "a wrong id fails that object alone");
	rr[1].id = &objs[9].id;
	rr[1].bufsize--;
	ok(ferry_store_read_run(s, rr, n) == -ENOBUFS && rr[0].r == -ENOBUFS &&
		   rr[n - 1].r == -ENOBUFS,
	   "a small buffer: ENOBUFS for all, before any read");
	rr[1].bufsize++;
	struct ferry_store_read t = rr[0];
	rr[0] = rr[1];
	rr[1] = t;
	ok(ferry_store_read_run(s, rr, n) == -EINVAL && rr[2].r == -EINVAL, "out of order: EINVAL");
	rr[1] = rr[0];
	rr[0] = t;
	ok(ferry_store_read_run(s, rr, 0) == -EINVAL, "an empty run: EINVAL");
	rr[0].loc.clen--;
	ok(ferry_store_read_run(s, rr, 1) == 0 && rr[0].r == -EBADMSG,
	   "a location with a wrong clen: that object EBADMSG");
	rr[0].loc.clen++;
	rr[0].loc.type = 9;
	ok(ferry_store_read_run(s, rr, n) == -EBADMSG && rr[1].r == -EBADMSG,
	   "an impossible location: EBADMSG for all, before any read");
	rr[0].loc.type = objs[8].type;

	/* Through the seam the store reads as on object storage: one request
	 * for the run. */
	ok(!ferry_store_remote(s), "a local store is not remote");
	ferry_blobs_set_fault(ferry_store_blobs(s), count_gets, &gets);
	ok(ferry_store_remote(s), "through the fault seam it is");
	ok(ferry_store_read_run(s, rr, n) == (int)n && run_check(rr, n, 8, -1) && gets == 1,
	   "the run in one request (%u)", gets);
	ferry_blobs_set_fault(ferry_store_blobs(s), NULL, NULL);

	for (size_t i = 0; i < n; i++)
		rr[i].loc.pack ^= 1;
	ok(ferry_store_read_run(s, rr, n) == -ENOENT && rr[0].r == -ENOENT,
	   "a missing pack: ENOENT");
	run_free(rr, n);
}

int main(void)
{
	char tmpl[] = "/tmp/ferry-test-store-XXXXXX";
	char *tmp = mkdtemp(tmpl);
	ok(tmp != NULL, "mkdtemp");
	if (!tmp)
		return tap_done();
	_cleanup_free_ char *root = NULL;
	if (asprintf(&root, "%s/store", tmp) < 0)
		return 1;

	_cleanup_(ferry_store_freep) struct ferry_store *s = NULL;
	ok(ferry_store_open(root, 0, &s) == -ENOENT, "open missing store -> ENOENT");
	ok_r(ferry_store_open(root, 1, &s), "create store");
	if (!s)
		return tap_done();
	ok(strcmp(ferry_store_url(s), root) == 0, "store url");

	for (unsigned i = 0; i < NOBJ; i++)
		fill(&objs[i], i);

	/* An empty writer writes nothing; an abandoned one leaves no trace. */
	struct packs p0 = { 0 };
	{
		_cleanup_(ferry_pack_writer_freep) struct ferry_pack_writer *w = NULL;
		ok_r(ferry_store_pack_begin(s, &w), "begin empty");
		ok_r(ferry_pack_writer_finish(w), "finish empty writer");
	}
	{
		_cleanup_(ferry_pack_writer_freep) struct ferry_pack_writer *w = NULL;
		ok_r(ferry_store_pack_begin(s, &w), "begin abandoned");
		ok_r(ferry_pack_writer_add(w, objs[1].type, &objs[1].id, objs[1].data, objs[1].len,
					   NULL),
		     "add to abandoned writer");
	}
	ok_r(ferry_store_list_packs(s, collect_pack, &p0), "list packs");
	ok(p0.n == 0, "no pack from empty or abandoned writers");

	/* One pack with every kind of object, and dedup. */
	_cleanup_(ferry_pack_writer_freep) struct ferry_pack_writer *w = NULL;
	ok_r(ferry_store_pack_begin(s, &w), "begin");
	int add_failed = 0;
	for (unsigned i = 0; i < NOBJ; i++)
		if (ferry_pack_writer_add(w, objs[i].type, &objs[i].id, objs[i].data, objs[i].len,
					  &objs[i].loc) != 0)
			add_failed++;
	ok(add_failed == 0, "added %u objects", NOBJ);
	ok(ferry_pack_writer_count(w) == NOBJ, "count");
	uint64_t bytes = ferry_pack_writer_bytes(w);
	struct ferry_loc again;
	ok(ferry_pack_writer_add(w, objs[5].type, &objs[5].id, objs[5].data, objs[5].len, &again) ==
		   1,
	   "same id again is deduplicated");
	ok(loc_eq(&again, &objs[5].loc), "dedup returns the first location");
	ok(ferry_pack_writer_count(w) == NOBJ && ferry_pack_writer_bytes(w) == bytes,
	   "dedup stores nothing");
	struct ferry_loc found;
	ok(ferry_pack_writer_find(w, &objs[7].id, &found) == 1 && loc_eq(&found, &objs[7].loc),
	   "find an added id");
	struct ferry_id unknown = { { 1, 2, 3 } };
	ok(ferry_pack_writer_find(w, &unknown, &found) == 0, "find an unknown id");
	ok(ferry_pack_writer_add(w, 9, &unknown, "x", 1, NULL) == -EINVAL, "bad type -> EINVAL");
	ok(ferry_pack_writer_add(w, FERRY_OBJ_CHUNK, &unknown, objs[6].data, FERRY_OBJ_MAX + 1,
				 NULL) == -EFBIG,
	   "oversized -> EFBIG");

	/* Compression is used where it helps and only there. */
	int raw_random = 1, zstd_text = 1;
	for (unsigned i = 0; i < NOBJ; i++) {
		if (i % 4 == 0 && objs[i].len > 0 && objs[i].loc.clen != objs[i].loc.plen)
			raw_random = 0;
		if ((i % 4 == 1 || i % 4 == 2) && objs[i].len >= 4096 &&
		    objs[i].loc.clen * 4 > objs[i].loc.plen)
			zstd_text = 0;
	}
	ok(raw_random, "incompressible objects stored raw");
	ok(zstd_text, "compressible objects stored compressed");

	uint64_t pack = ferry_pack_writer_id(w);
	struct packs p1 = { 0 };
	ferry_store_list_packs(s, collect_pack, &p1);
	ok(p1.n == 0, "nothing visible before finish");
	ok_r(ferry_pack_writer_finish(w), "finish");
	ok(ferry_pack_writer_find(w, &objs[9].id, &found) == 1, "find works after finish");
	ok(ferry_pack_writer_add(w, objs[1].type, &unknown, "x", 1, NULL) == -EINVAL,
	   "add after finish -> EINVAL");
	w = ferry_pack_writer_free(w);
	ferry_store_list_packs(s, collect_pack, &p1);
	ok(p1.n == 1 && p1.ids[0] == pack, "the pack is listed under its id");

	/* Round trips. */
	uint8_t *buf = malloc(FERRY_OBJ_MAX);
	int bad = 0;
	for (unsigned i = 0; i < NOBJ; i++) {
		memset(buf, 0xaa, MIN((size_t)FERRY_OBJ_MAX, objs[i].len + 16));
		if (ferry_store_read(s, &objs[i].loc, &objs[i].id, buf, FERRY_OBJ_MAX) < 0 ||
		    memcmp(buf, objs[i].data, objs[i].len) != 0)
			bad++;
	}
	ok(bad == 0, "every object reads back (%d bad)", bad);
	ok(ferry_store_read(s, &objs[1].loc, &objs[2].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "wrong id -> EBADMSG");
	ok(ferry_store_read(s, &objs[1].loc, &objs[1].id, buf, objs[1].len - 1) == -ENOBUFS,
	   "small buffer -> ENOBUFS");
	struct ferry_loc l = objs[1].loc;
	l.clen--;
	ok(ferry_store_read(s, &l, &objs[1].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "loc with wrong clen -> EBADMSG");
	l = objs[1].loc;
	l.offset += 1;
	ok(ferry_store_read(s, &l, &objs[1].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "loc with wrong offset -> EBADMSG");
	l = objs[1].loc;
	l.type = FERRY_OBJ_POINT + (l.type == FERRY_OBJ_POINT ? -1 : 0);
	ok(ferry_store_read(s, &l, &objs[1].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "loc with wrong type -> EBADMSG");
	l = objs[1].loc;
	l.offset = (uint64_t)1 << 40;
	ok(ferry_store_read(s, &l, &objs[1].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "loc past the end -> EBADMSG");
	l = objs[1].loc;
	l.pack ^= 1;
	ok(ferry_store_read(s, &l, &objs[1].id, buf, FERRY_OBJ_MAX) == -ENOENT,
	   "missing pack -> ENOENT");

	/* Index, with and without data. */
	struct index_check ic = { 0 };
	ok_r(ferry_store_pack_index(s, pack, 0, check_index, &ic), "pack index");
	ok(ic.n == NOBJ && ic.matched == NOBJ, "index lists every object at its location");
	ic = (struct index_check){ 0 };
	ok_r(ferry_store_pack_index(s, pack, 1, check_index, &ic), "pack index with data");
	ok(ic.n == NOBJ && ic.matched == NOBJ, "verified index lists every object");
	ok(ferry_store_pack_index(s, pack ^ 1, 0, check_index, &ic) == -ENOENT,
	   "index of missing pack -> ENOENT");

	test_runs(s);

	/* Threads share the store and its fd cache. */
	pthread_t th[4];
	struct reader_arg ra[4];
	for (unsigned i = 0; i < 4; i++) {
		ra[i] = (struct reader_arg){ .s = s };
		pthread_create(&th[i], NULL, reader, &ra[i]);
	}
	unsigned tbad = 0;
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		tbad += ra[i].bad;
	}
	ok(tbad == 0, "concurrent reads all verify (%u bad)", tbad);

	/* Damage on disk: a flipped payload byte. */
	_cleanup_free_ char *path = pack_path(root, pack);
	unsigned victim = 1; /* compressible, so a text-like zstd entry */
	ok(flip_byte(path, objs[victim].loc.offset + PACK_ENTRY_HEADER_SIZE + 2) == 0,
	   "flip a payload byte");
	ok(ferry_store_read(s, &objs[victim].loc, &objs[victim].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "read of the damaged object -> EBADMSG");
	ok_r(ferry_store_read(s, &objs[victim + 1].loc, &objs[victim + 1].id, buf, FERRY_OBJ_MAX),
	     "its neighbour still reads");
	{
		struct ferry_store_read rr[3];
		size_t rn = make_run(victim - 1, ARRAY_SIZE(rr), rr);

		ok(rn == 3 && ferry_store_read_run(s, rr, rn) == 2 &&
			   run_check(rr, rn, victim - 1, 1),
		   "in a run, the damaged object fails alone");
		run_free(rr, rn);
	}
	unsigned n = 0;
	ok(ferry_store_pack_index(s, pack, 1, count_cb, &n) == -EBADMSG && n == 0,
	   "index with data -> EBADMSG, no partial result");
	ok_r(ferry_store_pack_index(s, pack, 0, count_cb, &n), "index alone still checks out");
	flip_byte(path, objs[victim].loc.offset + PACK_ENTRY_HEADER_SIZE + 2);
	ok_r(ferry_store_read(s, &objs[victim].loc, &objs[victim].id, buf, FERRY_OBJ_MAX),
	     "flipped back reads again");

	/* A raw (incompressible) entry too. */
	ok(flip_byte(path, objs[0].loc.offset + PACK_ENTRY_HEADER_SIZE + 1000) == 0,
	   "flip a raw payload byte");
	ok(ferry_store_read(s, &objs[0].loc, &objs[0].id, buf, FERRY_OBJ_MAX) == -EBADMSG,
	   "read of a damaged raw object -> EBADMSG");
	flip_byte(path, objs[0].loc.offset + PACK_ENTRY_HEADER_SIZE + 1000);

	/* An index byte. */
	struct stat st;
	stat(path, &st);
	uint64_t index_off =
		(uint64_t)st.st_size - PACK_FOOTER_SIZE - (uint64_t)NOBJ * PACK_INDEX_RECORD_SIZE;
	flip_byte(path, index_off + 3 * PACK_INDEX_RECORD_SIZE + 40);
	n = 0;
	ok(ferry_store_pack_index(s, pack, 0, count_cb, &n) == -EBADMSG && n == 0,
	   "flipped index byte -> EBADMSG");
	flip_byte(path, index_off + 3 * PACK_INDEX_RECORD_SIZE + 40);
	ok_r(ferry_store_pack_index(s, pack, 1, count_cb, &n), "flipped back verifies");

	/* Truncation. */
	ok(truncate(path, st.st_size - 1) == 0, "truncate the pack by a byte");
	n = 0;
	ok(ferry_store_pack_index(s, pack, 0, count_cb, &n) == -EBADMSG && n == 0,
	   "truncated: index -> EBADMSG");
	ok(ferry_store_pack_index(s, pack, 1, count_cb, &n) == -EBADMSG && n == 0,
	   "truncated: index with data -> EBADMSG");
	ok(truncate(path, (off_t)objs[NOBJ / 2].loc.offset + 10) == 0, "truncate mid-pack");
	ok(ferry_store_read(s, &objs[NOBJ - 1].loc, &objs[NOBJ - 1].id, buf, FERRY_OBJ_MAX) ==
		   -EBADMSG,
	   "read past a truncation -> EBADMSG");
	ok(ferry_store_pack_index(s, pack, 0, count_cb, &n) == -EBADMSG, "mid-pack: EBADMSG");
	ok(truncate(path, 10) == 0, "truncate to 10 bytes");
	ok(ferry_store_pack_index(s, pack, 1, count_cb, &n) == -EBADMSG, "tiny: EBADMSG");

	/* Deletion, and many packs through the fd cache. */
	ok_r(ferry_store_delete_pack(s, pack), "delete pack");
	ok_r(ferry_store_delete_pack(s, pack), "delete again is fine");
	ok(ferry_store_read(s, &objs[1].loc, &objs[1].id, buf, FERRY_OBJ_MAX) == -ENOENT,
	   "read from a deleted pack -> ENOENT");

	enum {
		NPACKS = 80
	};
	static struct ferry_loc locs[NPACKS];
	int fails = 0;
	for (unsigned i = 0; i < NPACKS; i++) {
		_cleanup_(ferry_pack_writer_freep) struct ferry_pack_writer *pw = NULL;
		unsigned k = 1 + 4 * (i % 10);
		if (ferry_store_pack_begin(s, &pw) < 0 ||
		    ferry_pack_writer_add(pw, objs[k].type, &objs[k].id, objs[k].data, objs[k].len,
					  &locs[i]) < 0 ||
		    ferry_pack_writer_finish(pw) < 0)
			fails++;
	}
	ok(fails == 0, "wrote %d small packs", NPACKS);
	for (unsigned round = 0; round < 2; round++)
		for (unsigned i = 0; i < NPACKS; i++) {
			unsigned k = 1 + 4 * (i % 10);
			if (ferry_store_read(s, &locs[i], &objs[k].id, buf, FERRY_OBJ_MAX) < 0 ||
			    memcmp(buf, objs[k].data, objs[k].len) != 0)
				fails++;
		}
	ok(fails == 0, "reads across more packs than the fd cache holds");
	struct packs pl = { 0 };
	ok_r(ferry_store_list_packs(s, collect_pack, &pl), "list packs");
	int sorted = pl.n == NPACKS;
	for (unsigned i = 1; i < pl.n && i < ARRAY_SIZE(pl.ids); i++)
		if (pl.ids[i - 1] >= pl.ids[i])
			sorted = 0;
	ok(sorted, "%u packs listed in id order", pl.n);
	for (unsigned i = 0; i < NPACKS; i++)
		if (ferry_store_delete_pack(s, locs[i].pack) < 0)
			fails++;
	pl = (struct packs){ 0 };
	ferry_store_list_packs(s, collect_pack, &pl);
	ok(fails == 0 && pl.n == 0, "all deleted");

	/* A stray non-pack blob is not listed as a pack. */
	_cleanup_free_ char *stray = NULL;
	if (asprintf(&stray, "%s/packs/README", root) < 0)
		abort();
	ferry_write_file_atomic(stray, "x", 1);
	pl = (struct packs){ 0 };
	ferry_store_list_packs(s, collect_pack, &pl);
	ok(pl.n == 0, "non-pack names are ignored");

	test_goldens(tmp);

	free(buf);
	for (unsigned i = 0; i < NOBJ; i++)
		free(objs[i].data);
	_cleanup_free_ char *rm = NULL;
	if (asprintf(&rm, "rm -rf '%s'", tmp) >= 0 && system(rm) != 0)
		printf("# could not remove %s\n", tmp);
	return tap_done();
}
