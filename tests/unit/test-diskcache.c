/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the on-disk object cache: put/get round trips and misses,
 * the byte limit under eviction (least recently used first, also measured
 * on disk), damaged files (truncated, wrong size, garbage names, temp files
 * of a crash) as misses, the index rebuilt on reopen in last-use order, one
 * process per directory, many threads at once, and the cache in front of a
 * store's network reads: a hit costs no GET, a damaged cached entry is
 * fetched again, and local stores leave the cache alone.
 */
#include "ferry/diskcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/blobs.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "pack-internal.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_diskcache *, ferry_diskcache_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_store *, ferry_store_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_pack_writer *, ferry_pack_writer_free)

static char root[256];

/* An id and content derived from a number, so any reader can check bytes. */
static void make(unsigned k, size_t len, uint8_t *buf, struct ferry_id *id)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(k * 131 + i * 7 + (i >> 9));
	memcpy(buf, &k, MIN(len, sizeof(k)));
	ferry_sha256(&k, sizeof(k), id);
}

static void path_of(const char *dir, const struct ferry_id *id, char *buf, size_t size)
{
	char hex[FERRY_ID_HEX_SIZE];
	ferry_id_to_hex(id, hex);
	snprintf(buf, size, "%s/v1/%.2s/%s", dir, hex, hex);
}

/* Bytes the cache's files take on disk (du), and how many there are. */
static uint64_t disk_usage(const char *dir, unsigned *ret_files)
{
	char p[512];
	uint64_t total = 0;
	unsigned files = 0;
	snprintf(p, sizeof(p), "%s/v1", dir);
	DIR *d = opendir(p);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char sub[768];
		snprintf(sub, sizeof(sub), "%s/%s", p, de->d_name);
		DIR *s = opendir(sub);
		struct dirent *fe;
		while (s && (fe = readdir(s))) {
			char f[1100];
			struct stat st;
			snprintf(f, sizeof(f), "%s/%s", sub, fe->d_name);
			if (fe->d_name[0] == '.' || stat(f, &st) < 0)
				continue;
			total += (uint64_t)st.st_blocks * 512;
			files++;
		}
		if (s)
			closedir(s);
	}
	if (d)
		closedir(d);
	*ret_files = files;
	return total;
}

static void test_basic(void)
{
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/basic", root);
	_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
	ok_r(ferry_diskcache_open(dir, 1 << 20, &dc), "open a new cache directory");
	if (!dc)
		return;
	struct ferry_diskcache *zero = NULL;
	ok(ferry_diskcache_open(dir, 0, &zero) == -EINVAL && !zero, "a zero limit is refused");

	uint8_t a[5000], b[5000];
	struct ferry_id id;
	make(1, sizeof(a), a, &id);
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == -ENOENT, "empty cache: miss");
	ok_r(ferry_diskcache_put(dc, &id, a, sizeof(a)), "put");
	memset(b, 0, sizeof(b));
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == 0 && memcmp(a, b, sizeof(a)) == 0,
	   "get returns the bytes put");
	ok_r(ferry_diskcache_put(dc, &id, a, sizeof(a)), "put again is fine");

	char p[512];
	path_of(dir, &id, p, sizeof(p));
	struct stat st;
	ok(stat(p, &st) == 0 && st.st_size == (off_t)sizeof(a) && (st.st_mode & 0777) == 0600,
	   "stored as v1/<2 hex>/<64 hex>, mode 0600");
	snprintf(p, sizeof(p), "%s/CACHEDIR.TAG", dir);
	ok(access(p, F_OK) == 0, "CACHEDIR.TAG written");

	/* Another encoding of the object: held with another size. */
	ok(ferry_diskcache_get(dc, &id, b, 4000) == -ENOENT, "a get of another size is a miss");
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == -ENOENT, "... and dropped the entry");
	path_of(dir, &id, p, sizeof(p));
	ok(access(p, F_OK) < 0, "... and its file");

	/* Damaged on disk: truncated behind the cache's back. */
	ok_r(ferry_diskcache_put(dc, &id, a, sizeof(a)), "put");
	ok(truncate(p, 100) == 0, "truncate the cached file");
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == -ENOENT, "a truncated file is a miss");
	ok(access(p, F_OK) < 0, "... and is removed");
	ok_r(ferry_diskcache_put(dc, &id, a, sizeof(a)), "put");
	ok(unlink(p) == 0, "remove the cached file behind the cache's back");
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == -ENOENT, "a vanished file is a miss");

	ok_r(ferry_diskcache_put(dc, &id, a, sizeof(a)), "put");
	ok_r(ferry_diskcache_drop(dc, &id), "drop");
	ok(ferry_diskcache_get(dc, &id, b, sizeof(b)) == -ENOENT && access(p, F_OK) < 0,
	   "dropped: miss, file gone");
	ok_r(ferry_diskcache_drop(dc, &id), "dropping an absent entry is fine");

	static uint8_t big[300 * 1024];
	ok(ferry_diskcache_put(dc, &id, big, sizeof(big)) == -EFBIG,
	   "an entry over a quarter of the limit is refused");

	struct ferry_diskcache *other = NULL;
	ok(ferry_diskcache_open(dir, 1 << 20, &other) == -EBUSY && !other,
	   "a second open of the same directory: -EBUSY");
}

/* Fills a cache well past its limit; checks the LRU order and the size. */
static void test_eviction(void)
{
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/evict", root);
	const uint64_t max = 1 << 20;
	const size_t len = 20000; /* charged 20480: 51 fit */
	uint8_t buf[20000], got[20000];
	struct ferry_id id;
	_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
	ok_r(ferry_diskcache_open(dir, max, &dc), "open");
	if (!dc)
		return;

	int r = 0;
	for (unsigned k = 0; k < 51; k++) {
		make(k, len, buf, &id);
		r = r < 0 ? r : ferry_diskcache_put(dc, &id, buf, len);
	}
	ok_r(r, "51 entries of 20000 bytes in 1 MiB");
	struct ferry_diskcache_stats st;
	ferry_diskcache_get_stats(dc, &st);
	ok(st.entries == 51 && st.evictions == 0 && st.bytes == 51 * 20480,
	   "all held, nothing evicted (%llu entries, %llu bytes)", (unsigned long long)st.entries,
	   (unsigned long long)st.bytes);

	make(0, len, buf, &id);
	ok(ferry_diskcache_get(dc, &id, got, len) == 0, "use entry 0: now the most recent");
	make(51, len, buf, &id);
	ok_r(ferry_diskcache_put(dc, &id, buf, len), "put entry 51");
	make(0, len, buf, &id);
	ok(ferry_diskcache_get(dc, &id, got, len) == 0 && memcmp(buf, got, len) == 0,
	   "entry 0 survives (recently used)");
	make(1, len, buf, &id);
	ok(ferry_diskcache_get(dc, &id, got, len) == -ENOENT,
	   "entry 1 was evicted (least recently used)");

	for (unsigned k = 52; k < 300; k++) {
		make(k, len, buf, &id);
		r = r < 0 ? r : ferry_diskcache_put(dc, &id, buf, len);
	}
	ok_r(r, "248 more puts");
	ferry_diskcache_get_stats(dc, &st);
	unsigned files;
	uint64_t du = disk_usage(dir, &files);
	ok(st.bytes <= max && st.entries == 51 && files == 51,
	   "index and directory hold 51 entries, %llu bytes <= limit",
	   (unsigned long long)st.bytes);
	ok(du <= max, "on disk (st_blocks): %llu bytes <= %llu", (unsigned long long)du,
	   (unsigned long long)max);
	make(299, len, buf, &id);
	ok(ferry_diskcache_get(dc, &id, got, len) == 0 && memcmp(buf, got, len) == 0,
	   "the newest entry is there");
	make(100, len, buf, &id);
	ok(ferry_diskcache_get(dc, &id, got, len) == -ENOENT, "an old one is not");
}

/* Reopening rebuilds the index in last-use order (the files' mtime). */
static void test_restart(void)
{
	char dir[300], p[512];
	snprintf(dir, sizeof(dir), "%s/restart", root);
	const size_t len = 10000; /* charged 12288 */
	uint8_t buf[10000], got[10000];
	struct ferry_id ids[20];
	{
		_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
		ok_r(ferry_diskcache_open(dir, 1 << 20, &dc), "open");
		if (!dc)
			return;
		int r = 0;
		for (unsigned k = 0; k < 20; k++) {
			make(k, len, buf, &ids[k]);
			r = r < 0 ? r : ferry_diskcache_put(dc, &ids[k], buf, len);
		}
		ok_r(r, "20 entries");
	}
	/* Last use: entry k at time 1000000 + k, except entry 0, the newest. */
	for (unsigned k = 0; k < 20; k++) {
		struct timespec ts[2] = { { .tv_sec = 1000000 + (k ? k : 100) },
					  { .tv_sec = 1000000 + (k ? k : 100) } };
		path_of(dir, &ids[k], p, sizeof(p));
		utimensat(AT_FDCWD, p, ts, 0);
	}
	/* Leftovers of a crash and files that are not ours. */
	path_of(dir, &ids[0], p, sizeof(p));
	char *slash = strrchr(p, '/');
	snprintf(slash + 1, 40, ".tmp-1-1");
	ok(ferry_write_file_atomic(p, "torn", 4) == 0, "a temp file left by a crash");
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s", p);
	snprintf(slash + 1, 40, "README");
	ok(ferry_write_file_atomic(p, "x", 1) == 0, "a file that is not an entry");
	char junk[512];
	snprintf(junk, sizeof(junk), "%s", p);

	{
		_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
		ok_r(ferry_diskcache_open(dir, 1 << 20, &dc), "reopen");
		if (!dc)
			return;
		struct ferry_diskcache_stats st;
		ferry_diskcache_get_stats(dc, &st);
		ok(st.entries == 20 && st.bytes == 20 * 12288, "index rebuilt: 20 entries");
		ok(access(tmp, F_OK) < 0, "the temp file is removed");
		ok(access(junk, F_OK) == 0, "a foreign file is left alone");
		make(7, len, buf, &ids[7]);
		ok(ferry_diskcache_get(dc, &ids[7], got, len) == 0 && memcmp(buf, got, len) == 0,
		   "entries read back after the restart");
	}
	{
		/* A smaller limit: the 10 least recently used go. */
		_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
		ok_r(ferry_diskcache_open(dir, 10 * 12288, &dc), "reopen with room for 10");
		if (!dc)
			return;
		struct ferry_diskcache_stats st;
		ferry_diskcache_get_stats(dc, &st);
		ok(st.entries == 10 && st.evictions == 10, "evicted down to the new limit");
		int order_ok = 1;
		for (unsigned k = 0; k < 20; k++) {
			make(k, len, buf, &ids[k]);
			int hit = ferry_diskcache_get(dc, &ids[k], got, len) == 0;
			/* Kept: entry 7 (its hit above refreshed the 1970
			 * mtime to now), entry 0, then 19 down to 12. */
			int want = k == 0 || k == 7 || k >= 12;
			if (hit != want)
				order_ok = 0;
		}
		ok(order_ok, "the least recently used (by mtime) were the ones evicted");
	}
}

/* --- many threads --- */

#define T_IDS 64
#define T_LEN 30000

struct tctx {
	struct ferry_diskcache *dc;
	unsigned seed;
	unsigned bad, hits, errors;
};

static void *worker(void *p)
{
	struct tctx *t = p;
	static __thread uint8_t buf[T_LEN], got[T_LEN];
	for (unsigned i = 0; i < 3000; i++) {
		unsigned k = (unsigned)rand_r(&t->seed) % T_IDS;
		struct ferry_id id;
		make(k, T_LEN, buf, &id);
		int r = ferry_diskcache_get(t->dc, &id, got, T_LEN);
		if (r == 0) {
			t->hits++;
			if (memcmp(buf, got, T_LEN) != 0)
				t->bad++;
		} else if (r != -ENOENT)
			t->errors++;
		else if (ferry_diskcache_put(t->dc, &id, buf, T_LEN) < 0)
			t->errors++;
		if (i % 97 == 0)
			ferry_diskcache_drop(t->dc, &id);
	}
	return NULL;
}

static void test_threads(void)
{
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/threads", root);
	const uint64_t max = 32 * 32768; /* half the ids fit */
	_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
	ok_r(ferry_diskcache_open(dir, max, &dc), "open");
	if (!dc)
		return;
	pthread_t th[8];
	struct tctx t[8];
	for (unsigned i = 0; i < 8; i++) {
		t[i] = (struct tctx){ .dc = dc, .seed = i + 1 };
		pthread_create(&th[i], NULL, worker, &t[i]);
	}
	unsigned bad = 0, hits = 0, errors = 0;
	for (unsigned i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
		hits += t[i].hits;
		errors += t[i].errors;
	}
	ok(bad == 0 && errors == 0,
	   "8 threads, 24000 operations: no wrong bytes, no errors (%u hits)", hits);
	ok(hits > 1000, "and a fair share of hits");
	struct ferry_diskcache_stats st;
	ferry_diskcache_get_stats(dc, &st);
	unsigned files;
	uint64_t du = disk_usage(dir, &files);
	ok(st.bytes <= max && files == st.entries && du <= max,
	   "limit kept (%llu bytes, %llu on disk), directory agrees with the index (%u files)",
	   (unsigned long long)st.bytes, (unsigned long long)du, files);
}

/* --- in front of a store --- */

struct gets {
	unsigned n;
};

static int count_gets(const char *op, const char *name, void *ud)
{
	(void)name;
	if (strcmp(op, "get_range") == 0)
		((struct gets *)ud)->n++;
	return 0;
}

static void test_store(void)
{
	char sdir[300], dir[300], p[512];
	snprintf(sdir, sizeof(sdir), "%s/store", root);
	snprintf(dir, sizeof(dir), "%s/store-cache", root);
	_cleanup_(ferry_store_freep) struct ferry_store *s = NULL;
	_cleanup_(ferry_pack_writer_freep) struct ferry_pack_writer *w = NULL;
	_cleanup_(ferry_diskcache_freep) struct ferry_diskcache *dc = NULL;
	ok_r(ferry_store_open(sdir, 1, &s), "a store");
	ok_r(ferry_diskcache_open(dir, 8 << 20, &dc), "a disk cache");
	if (!s || !dc)
		return;

	static uint8_t data[3][65536], got[65536];
	struct ferry_id ids[3];
	struct ferry_loc locs[3];
	ok_r(ferry_store_pack_begin(s, &w), "pack");
	for (unsigned k = 0; k < 3; k++) {
		make(k + 1000, sizeof(data[k]), data[k], &ids[k]);
		if (k == 1) /* compressible */
			memset(data[k] + 100, 0, sizeof(data[k]) - 100);
		ferry_sha256(data[k], sizeof(data[k]), &ids[k]);
		ferry_pack_writer_add(w, FERRY_OBJ_CHUNK, &ids[k], data[k], sizeof(data[k]),
				      &locs[k]);
	}
	ok_r(ferry_pack_writer_finish(w), "finish");

	/* A local store reads with pread: the cache stays out of it. */
	ok_r(ferry_store_set_disk_cache(s, dc), "set the disk cache");
	ok(ferry_store_read(s, &locs[0], &ids[0], got, sizeof(got)) == 0 &&
		   memcmp(got, data[0], sizeof(got)) == 0,
	   "local read");
	struct ferry_diskcache_stats st;
	ferry_diskcache_get_stats(dc, &st);
	ok(st.puts == 0 && st.hits + st.misses == 0, "a local store leaves the cache alone");

	/* A fault callback sends reads through the blobs seam, the path a
	 * remote store takes; it also counts the GETs. */
	struct gets g = { 0 };
	ferry_blobs_set_fault(ferry_store_blobs(s), count_gets, &g);
	int r = 0;
	for (unsigned k = 0; k < 3; k++)
		r = r < 0 ? r : ferry_store_read(s, &locs[k], &ids[k], got, sizeof(got));
	ok(r == 0 && g.n == 3, "cold: 3 reads, 3 GETs");
	ferry_diskcache_get_stats(dc, &st);
	ok(st.puts == 3 && st.entries == 3, "... and 3 entries cached");
	path_of(dir, &ids[1], p, sizeof(p));
	struct stat sst;
	ok(stat(p, &sst) == 0 && sst.st_size == PACK_ENTRY_HEADER_SIZE + (off_t)locs[1].clen &&
		   locs[1].clen < locs[1].plen,
	   "a cached entry is the pack's entry, compressed (%lld bytes)", (long long)sst.st_size);
	r = 0;
	for (unsigned k = 0; k < 3; k++) {
		memset(got, 0, sizeof(got));
		r = r < 0 ? r : ferry_store_read(s, &locs[k], &ids[k], got, sizeof(got));
		if (r == 0 && memcmp(got, data[k], sizeof(got)) != 0)
			r = -EBADMSG;
	}
	ok(r == 0 && g.n == 3, "warm: 3 verified reads, no GET");

	/* A flipped byte in a cached payload: verified, dropped, fetched. */
	int fd = open(p, O_RDWR);
	uint8_t byte = 0;
	ok(fd >= 0 && pread(fd, &byte, 1, PACK_ENTRY_HEADER_SIZE + 3) == 1, "open a cached entry");
	byte ^= 0x10;
	ok(fd >= 0 && pwrite(fd, &byte, 1, PACK_ENTRY_HEADER_SIZE + 3) == 1, "flip a byte in it");
	if (fd >= 0)
		close(fd);
	memset(got, 0, sizeof(got));
	ok(ferry_store_read(s, &locs[1], &ids[1], got, sizeof(got)) == 0 &&
		   memcmp(got, data[1], sizeof(got)) == 0 && g.n == 4,
	   "a damaged cached entry: right bytes anyway, from one more GET");
	ferry_diskcache_get_stats(dc, &st);
	ok(st.dropped == 1 && st.puts == 4, "... the entry was dropped and put again");
	ok(ferry_store_read(s, &locs[1], &ids[1], got, sizeof(got)) == 0 && g.n == 4,
	   "... and hits again");

	/* An entry with the right size but another object's bytes. */
	char p0[512];
	path_of(dir, &ids[0], p0, sizeof(p0));
	path_of(dir, &ids[2], p, sizeof(p));
	ok(rename(p0, p) == 0, "put entry 0's file where entry 2's was");
	ok(ferry_store_read(s, &locs[2], &ids[2], got, sizeof(got)) == 0 &&
		   memcmp(got, data[2], sizeof(got)) == 0 && g.n == 5,
	   "another object's entry under this id: refused, fetched");

	/* The pieces for readers that fetch entries themselves. */
	unsigned before = g.n;
	ok(ferry_store_read_cached(s, &locs[1], &ids[1], got, sizeof(got)) == 0 &&
		   memcmp(got, data[1], sizeof(got)) == 0,
	   "read_cached: a verified hit");
	ferry_diskcache_drop(dc, &ids[1]);
	ok(ferry_store_read_cached(s, &locs[1], &ids[1], got, sizeof(got)) == -ENOENT,
	   "read_cached: a miss is -ENOENT");
	static uint8_t entry[PACK_ENTRY_HEADER_SIZE + 65536];
	size_t elen = PACK_ENTRY_HEADER_SIZE + locs[1].clen;
	char pname[32];
	snprintf(pname, sizeof(pname), "packs/%016llx.pack", (unsigned long long)locs[1].pack);
	ok_r(ferry_blobs_get_range(ferry_store_blobs(s), pname, locs[1].offset, entry, elen),
	     "fetch an entry by hand");
	ferry_store_cache_fill(s, &ids[1], entry, elen);
	memset(got, 0, sizeof(got));
	ok(ferry_store_read_cached(s, &locs[1], &ids[1], got, sizeof(got)) == 0 &&
		   memcmp(got, data[1], sizeof(got)) == 0,
	   "cache_fill: then a hit");
	entry[PACK_ENTRY_HEADER_SIZE] ^= 1;
	ferry_diskcache_drop(dc, &ids[1]);
	ferry_store_cache_fill(s, &ids[1], entry, elen);
	ok(ferry_store_read_cached(s, &locs[1], &ids[1], got, sizeof(got)) == -ENOENT,
	   "a bad entry offered is caught on the way out");
	ok(g.n == before + 1, "read_cached never GETs");

	/* With the cache unset the store reads the network again. */
	ferry_store_set_disk_cache(s, NULL);
	before = g.n;
	ok(ferry_store_read(s, &locs[2], &ids[2], got, sizeof(got)) == 0 && g.n == before + 1,
	   "unset: reads GET again");
	ok(ferry_store_read_cached(s, &locs[2], &ids[2], got, sizeof(got)) == -ENOENT,
	   "unset: read_cached misses");
	ferry_blobs_set_fault(ferry_store_blobs(s), NULL, NULL);
}

int main(void)
{
	snprintf(root, sizeof(root), "/tmp/ferry-test-diskcache.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_basic();
	test_eviction();
	test_restart();
	test_threads();
	test_store();

	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", root);
	return tap_done();
}
