/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The on-disk object cache (diskcache.h, docs/format/diskcache.md): one
 * file per object under DIR/v1/<first two hex digits>/<64 hex digits>, an
 * in-memory index (lru.h: a hash table with a least-recently-used list)
 * rebuilt by a scan on open, and a byte budget kept by evicting from the list's tail.
 * File system changes that the index mirrors (rename into place, unlink)
 * happen under the lock, so index and directory never disagree for long;
 * the reads and writes of file contents happen outside it. A read that
 * races with an eviction or a replacement sees the old file, the new one or
 * none: never a mix, because files are only ever renamed into place.
 */
#include "ferry/diskcache.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "ferry/util.h"
#include "lru.h"

/* The layout version is a directory name: a future layout uses another
 * one and leaves (or removes) this one, never misreads it. */
#define LAYOUT_DIR "v1"
#define TMP_PREFIX ".tmp-"
/* Files are charged in whole blocks, which is what they cost on disk
 * (and what du(1) shows). */
#define BLOCK 4096u
/* An entry's mtime says when it was last used, for the order after a
 * restart; refreshing it on every hit would cost a syscall per read. */
#define TOUCH_INTERVAL_S 60

static const char cachedir_tag[] = "Signature: 8a477f597d28d172789f06886806bc55\n"
				   "# This file is a cache directory tag created by ferryfs.\n"
				   "# For information about cache directory tags see "
				   "https://bford.info/cachedir/\n";

struct entry {
	struct lru_node node; /* keyed by the object's id; always on the list */
	uint64_t len;         /* file size */
	uint64_t gen;         /* which file: a replaced entry gets a new one */
	int64_t mtime_s;
};

struct ferry_diskcache {
	char *dir;
	int dfd; /* DIR/v1 */
	int lock_fd;
	uint64_t max_bytes;

	pthread_mutex_t lock;
	struct lru_table index;
	uint64_t bytes, gen, tmp_seq;
	struct ferry_diskcache_stats st;
};

static uint64_t charge(uint64_t len)
{
	return DIV_ROUND_UP(len, (uint64_t)BLOCK) * BLOCK;
}

/* "ab/abcd...": the file's name relative to DIR/v1. */
static void entry_name(const struct ferry_id *id, char buf[3 + FERRY_ID_HEX_SIZE])
{
	char hex[FERRY_ID_HEX_SIZE];
	ferry_id_to_hex(id, hex);
	snprintf(buf, 3 + FERRY_ID_HEX_SIZE, "%.2s/%s", hex, hex);
}

static struct entry *entry_of(struct lru_node *n)
{
	return n ? lru_container_of(n, struct entry, node) : NULL;
}

static struct entry *find(const struct ferry_diskcache *dc, const struct ferry_id *id)
{
	return entry_of(lru_table_find(&dc->index, id));
}

/* Takes e into the index as the most recently used entry. */
static void insert(struct ferry_diskcache *dc, struct entry *e)
{
	lru_table_insert(&dc->index, &e->node);
	lru_table_push(&dc->index, &e->node);
	dc->bytes += charge(e->len);
	if (dc->index.n > dc->index.mask + 1)
		(void)lru_table_grow(&dc->index); /* or chains just get longer */
}

/* Takes e out of the index and frees it; the file is the caller's business. */
static void remove_entry(struct ferry_diskcache *dc, struct entry *e)
{
	lru_table_remove(&dc->index, &e->node);
	dc->bytes -= charge(e->len);
	free(e);
}

/* Under the lock: the file and the index entry go together. */
static void discard(struct ferry_diskcache *dc, struct entry *e)
{
	char name[3 + FERRY_ID_HEX_SIZE];
	entry_name(&e->node.id, name);
	(void)unlinkat(dc->dfd, name, 0); /* already gone is what we want */
	remove_entry(dc, e);
}

static void evict(struct ferry_diskcache *dc)
{
	struct entry *e;

	while (dc->bytes > dc->max_bytes && (e = entry_of(lru_table_oldest(&dc->index)))) {
		discard(dc, e);
		dc->st.evictions++;
	}
}

/* --- opening: the directory scan --- */

struct found {
	struct ferry_id id;
	uint64_t len;
	int64_t mtime_s;
	long mtime_ns;
};

static int found_cmp(const void *a, const void *b)
{
	const struct found *x = a, *y = b;
	if (x->mtime_s != y->mtime_s)
		return x->mtime_s < y->mtime_s ? -1 : 1;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return memcmp(x->id.b, y->id.b, FERRY_ID_SIZE);
}

static int is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == '\0';
}

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

/* Collects the entries of one fan-out directory; removes leftovers. */
static int scan_fanout(struct ferry_diskcache *dc, const char *sub, struct found **list, size_t *n,
		       size_t *cap)
{
	int fd = openat(dc->dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOTDIR || errno == ELOOP ? 0 : -errno;
	_cleanup_(closedirp) DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
			/* A put that never finished: we hold the lock, so no
			 * live writer owns it. */
			(void)unlinkat(dirfd(d), name, 0);
			continue;
		}
		struct found f;
		/* Only names we write, filed under the right fan-out
		 * directory; anything else is left alone. */
		if (!is_lower_hex(name, 2 * FERRY_ID_SIZE) || strncmp(name, sub, 2) != 0 ||
		    ferry_id_from_hex(name, &f.id) < 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (st.st_size <= 0 || (uint64_t)st.st_size > dc->max_bytes / 4) {
			/* Nothing we would have put: an empty file is a torn
			 * one, a huge one predates a smaller limit. */
			(void)unlinkat(dirfd(d), name, 0);
			continue;
		}
		f.len = (uint64_t)st.st_size;
		f.mtime_s = st.st_mtim.tv_sec;
		f.mtime_ns = st.st_mtim.tv_nsec;
		if (*n == *cap) {
			size_t c = *cap ? *cap * 2 : 1024;
			struct found *l = realloc(*list, c * sizeof(*l));
			if (!l)
				return -ENOMEM;
			*list = l;
			*cap = c;
		}
		(*list)[(*n)++] = f;
	}
	return errno ? -errno : 0;
}

static int scan(struct ferry_diskcache *dc)
{
	_cleanup_free_ struct found *list = NULL;
	size_t n = 0, cap = 0;
	int fd = dup(dc->dfd);
	if (fd < 0)
		return -errno;
	_cleanup_(closedirp) DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		if (!is_lower_hex(de->d_name, 2))
			continue;
		int r = scan_fanout(dc, de->d_name, &list, &n, &cap);
		if (r < 0)
			return r;
	}
	if (errno)
		return -errno;

	/* Oldest first, so that the newest ends at the head of the list. */
	if (n)
		qsort(list, n, sizeof(*list), found_cmp);
	for (size_t i = 0; i < n; i++) {
		struct entry *e = calloc(1, sizeof(*e));
		if (!e)
			return -ENOMEM;
		*e = (struct entry){
			.node.id = list[i].id,
			.len = list[i].len,
			.gen = ++dc->gen,
			.mtime_s = list[i].mtime_s,
		};
		insert(dc, e);
	}
	return 0;
}

int ferry_diskcache_open(const char *dir, uint64_t max_bytes, struct ferry_diskcache **ret)
{
	if (!dir || !*dir || max_bytes == 0 || !ret)
		return -EINVAL;
	struct ferry_diskcache *dc = calloc(1, sizeof(*dc));
	if (!dc)
		return -ENOMEM;
	dc->dfd = dc->lock_fd = -1;
	dc->max_bytes = max_bytes;
	int rt = lru_table_init(&dc->index, 1024);
	dc->dir = strdup(dir);
	int r = pthread_mutex_init(&dc->lock, NULL);
	if (r != 0) {
		lru_table_done(&dc->index);
		free(dc->dir);
		free(dc);
		return -r;
	}
	if (rt < 0 || !dc->dir) {
		ferry_diskcache_free(dc);
		return -ENOMEM;
	}

	r = ferry_mkdir_p(dir, FERRY_DIR_MODE);
	_cleanup_free_ char *lock = NULL, *tag = NULL, *layout = NULL;
	if (r >= 0 &&
	    (asprintf(&lock, "%s/lock", dir) < 0 || asprintf(&tag, "%s/CACHEDIR.TAG", dir) < 0 ||
	     asprintf(&layout, "%s/" LAYOUT_DIR, dir) < 0))
		r = -ENOMEM;
	if (r >= 0) {
		dc->lock_fd =
			open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, FERRY_FILE_MODE);
		if (dc->lock_fd < 0)
			r = -errno;
		else if (flock(dc->lock_fd, LOCK_EX | LOCK_NB) < 0)
			r = errno == EWOULDBLOCK ? -EBUSY : -errno;
	}
	/* Lets backup tools skip the directory; not worth failing over. */
	if (r >= 0 && access(tag, F_OK) < 0)
		(void)ferry_write_file_atomic(tag, cachedir_tag, sizeof(cachedir_tag) - 1);
	if (r >= 0 && mkdir(layout, FERRY_DIR_MODE) < 0 && errno != EEXIST)
		r = -errno;
	if (r >= 0) {
		dc->dfd = open(layout, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (dc->dfd < 0)
			r = -errno;
	}
	if (r >= 0)
		r = scan(dc);
	if (r < 0) {
		ferry_diskcache_free(dc);
		return r;
	}
	evict(dc);
	*ret = dc;
	return 0;
}

static void free_node(struct lru_node *n, void *userdata)
{
	free(entry_of(n));
}

struct ferry_diskcache *ferry_diskcache_free(struct ferry_diskcache *dc)
{
	if (!dc)
		return NULL;
	lru_table_clear(&dc->index, free_node, NULL);
	lru_table_done(&dc->index);
	if (dc->dfd >= 0)
		close(dc->dfd);
	if (dc->lock_fd >= 0)
		close(dc->lock_fd); /* releases the flock */
	pthread_mutex_destroy(&dc->lock);
	free(dc->dir);
	free(dc);
	return NULL;
}

/* --- the operations --- */

/* A read found the file unusable: drop it, unless a put replaced it
 * meanwhile (then the new file is another story). */
static void drop_gen(struct ferry_diskcache *dc, const struct ferry_id *id, uint64_t gen)
{
	pthread_mutex_lock(&dc->lock);
	struct entry *e = find(dc, id);
	if (e && e->gen == gen) {
		discard(dc, e);
		dc->st.dropped++;
	}
	pthread_mutex_unlock(&dc->lock);
}

int ferry_diskcache_get(struct ferry_diskcache *dc, const struct ferry_id *id, void *buf,
			size_t len)
{
	if (!dc || !id || (!buf && len))
		return -EINVAL;

	pthread_mutex_lock(&dc->lock);
	struct entry *e = find(dc, id);
	if (!e) {
		dc->st.misses++;
		pthread_mutex_unlock(&dc->lock);
		return -ENOENT;
	}
	if (e->len != len) {
		/* Another encoding of the same object, from a pack the
		 * catalog no longer points at: useless now. */
		discard(dc, e);
		dc->st.dropped++;
		dc->st.misses++;
		pthread_mutex_unlock(&dc->lock);
		return -ENOENT;
	}
	lru_table_touch(&dc->index, &e->node);
	uint64_t gen = e->gen;
	int64_t now_s = ferry_now_ns() / 1000000000;
	bool touch = e->mtime_s + TOUCH_INTERVAL_S < now_s;
	if (touch)
		e->mtime_s = now_s;
	pthread_mutex_unlock(&dc->lock);

	char name[3 + FERRY_ID_HEX_SIZE];
	entry_name(id, name);
	_cleanup_close_ int fd = openat(dc->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	int r = fd < 0 ? -errno : fstat(fd, &st) < 0 ? -errno : 0;
	if (r >= 0 && (uint64_t)st.st_size != len)
		r = -EBADMSG;
	if (r >= 0)
		r = ferry_pread_all(fd, buf, len, 0);
	if (r < 0) {
		/* Gone under us (another process, a cleaner) or damaged:
		 * either way a miss, and the index forgets it. */
		drop_gen(dc, id, gen);
		pthread_mutex_lock(&dc->lock);
		dc->st.misses++;
		pthread_mutex_unlock(&dc->lock);
		return -ENOENT;
	}
	if (touch)
		(void)futimens(fd, NULL);
	pthread_mutex_lock(&dc->lock);
	dc->st.hits++;
	pthread_mutex_unlock(&dc->lock);
	return 0;
}

/* Writes buf into a new temp file in the fan-out directory of name; its
 * name goes to tmp. */
static int write_tmp(struct ferry_diskcache *dc, const char *name, const void *buf, size_t len,
		     char tmp[64])
{
	pthread_mutex_lock(&dc->lock);
	uint64_t seq = ++dc->tmp_seq;
	pthread_mutex_unlock(&dc->lock);
	snprintf(tmp, 64, "%.2s/" TMP_PREFIX "%ld-%llu", name, (long)getpid(),
		 (unsigned long long)seq);

	_cleanup_close_ int fd = -1;
	for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
		fd = openat(dc->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			    FERRY_FILE_MODE);
		if (fd < 0 && errno == ENOENT && attempt == 0) {
			char sub[3] = { name[0], name[1], 0 };
			if (mkdirat(dc->dfd, sub, FERRY_DIR_MODE) < 0 && errno != EEXIST)
				return -errno;
		} else if (fd < 0)
			return -errno;
	}
	if (fd < 0)
		return -ENOENT;
	int r = ferry_pwrite_all(fd, buf, len, 0);
	if (r >= 0 && close(TAKE_FD(fd)) < 0)
		r = -errno;
	if (r < 0)
		(void)unlinkat(dc->dfd, tmp, 0);
	return r;
}

int ferry_diskcache_put(struct ferry_diskcache *dc, const struct ferry_id *id, const void *buf,
			size_t len)
{
	if (!dc || !id || !buf || len == 0)
		return -EINVAL;
	if (len > dc->max_bytes / 4)
		return -EFBIG;

	pthread_mutex_lock(&dc->lock);
	struct entry *e = find(dc, id);
	bool have = e && e->len == len;
	pthread_mutex_unlock(&dc->lock);
	if (have) /* another thread filled it meanwhile */
		return 0;

	char name[3 + FERRY_ID_HEX_SIZE], tmp[64];
	entry_name(id, name);
	int r = write_tmp(dc, name, buf, len, tmp);
	if (r < 0)
		return r;
	struct entry *ne = calloc(1, sizeof(*ne));
	if (!ne) {
		(void)unlinkat(dc->dfd, tmp, 0);
		return -ENOMEM;
	}

	pthread_mutex_lock(&dc->lock);
	if (renameat(dc->dfd, tmp, dc->dfd, name) < 0) {
		r = -errno;
		pthread_mutex_unlock(&dc->lock);
		(void)unlinkat(dc->dfd, tmp, 0);
		free(ne);
		return r;
	}
	e = find(dc, id);
	if (e)
		remove_entry(dc, e); /* its file was just replaced */
	*ne = (struct entry){
		.node.id = *id,
		.len = len,
		.gen = ++dc->gen,
		.mtime_s = ferry_now_ns() / 1000000000,
	};
	insert(dc, ne);
	dc->st.puts++;
	evict(dc);
	pthread_mutex_unlock(&dc->lock);
	return 0;
}

int ferry_diskcache_drop(struct ferry_diskcache *dc, const struct ferry_id *id)
{
	if (!dc || !id)
		return -EINVAL;
	pthread_mutex_lock(&dc->lock);
	struct entry *e = find(dc, id);
	if (e) {
		discard(dc, e);
		dc->st.dropped++;
	}
	pthread_mutex_unlock(&dc->lock);
	return 0;
}

void ferry_diskcache_get_stats(struct ferry_diskcache *dc, struct ferry_diskcache_stats *ret)
{
	pthread_mutex_lock(&dc->lock);
	*ret = dc->st;
	ret->entries = dc->index.n;
	ret->bytes = dc->bytes;
	ret->max_bytes = dc->max_bytes;
	pthread_mutex_unlock(&dc->lock);
}
