/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Named immutable blobs on a location given by URL. The generic layer here
 * validates names, runs the fault-injection seam and sorts listings; a small
 * table of backend operations does the I/O, so that object stores (azblob://,
 * s3://) can plug in later beside the local directory backend. Local puts
 * are atomic and durable: temp file (".tmp-*", never listed), fsync, rename
 * (or a no-replace rename / link for exclusive puts), fsync of the directory.
 */
#include "ferry/blobs.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/util.h"

#define TMP_PREFIX ".tmp-"
#define NAME_MAX_LEN 1024

struct blob_entry {
	char *name;
	uint64_t size;
};

/* What a backend's list gathers; the generic layer filters and sorts it. */
struct blob_list {
	struct blob_entry *v;
	size_t n, cap;
};

struct blobs_ops {
	const char *scheme; /* "file" for the local backend */
	int (*open)(struct ferry_blobs *b, const char *where, int create);
	void (*close)(struct ferry_blobs *b);
	int (*put)(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		   int exclusive);
	int (*get_range)(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			 size_t len);
	/* Optional: whole-blob read; NULL means size + get_range. */
	int (*get)(struct ferry_blobs *b, const char *name, void **ret_buf, size_t *ret_len);
	int (*size)(struct ferry_blobs *b, const char *name, uint64_t *ret);
	int (*del)(struct ferry_blobs *b, const char *name);
	/* Adds every blob under directory-like prefix dir ("" or ending in '/'). */
	int (*list)(struct ferry_blobs *b, const char *dir, struct blob_list *out);
};

struct ferry_blobs {
	const struct blobs_ops *ops;
	char *url;
	int (*fault)(const char *op, const char *name, void *ud);
	void *fault_ud;
	/* local backend */
	char *dir;
	int dirfd;
};

static void blob_list_done(struct blob_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (struct blob_list){ 0 };
}

static int blob_list_add(struct blob_list *l, char *name, uint64_t size)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct blob_entry *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct blob_entry){ .name = name, .size = size };
	return 0;
}

static int name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* A whole path component: not "." or "..", not one of our temp files. */
static int component_ok(const char *c, size_t n)
{
	if (n == 0 || n > NAME_MAX)
		return 0;
	if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
		return 0;
	if (n >= strlen(TMP_PREFIX) && memcmp(c, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok(c[i]))
			return 0;
	return 1;
}

/*
 * Names are checked here, once, for every backend: they become paths in the
 * local backend, so anything that could climb out of the location (leading
 * '/', "..", empty components) is refused. A prefix may end in '/' or in a
 * partial last component.
 */
static int path_valid(const char *s, int is_prefix)
{
	size_t len = strlen(s);
	if (len > NAME_MAX_LEN || (!is_prefix && len == 0))
		return 0;
	const char *p = s;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (slash || !is_prefix) {
			if (!component_ok(p, n))
				return 0;
		} else {
			for (size_t i = 0; i < n; i++)
				if (!name_char_ok(p[i]))
					return 0;
		}
		if (!slash)
			return 1;
		p = slash + 1;
		if (!*p && is_prefix)
			return 1;
	}
}

static int fault_check(struct ferry_blobs *b, const char *op, const char *name)
{
	if (!b->fault)
		return 0;
	int r = b->fault(op, name, b->fault_ud);
	return r < 0 ? r : 0;
}

/* --- local directory backend --- */

static int fsync_fd(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

/* mkdir -p relative to dfd; a directory we create is made durable in its
 * parent, otherwise a crash could lose the blob we put inside it. */
static int mkdirs_at(int dfd, const char *path)
{
	_cleanup_free_ char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (char *s = p;; s++) {
		if (*s != '/' && *s)
			continue;
		char saved = *s;
		*s = 0;
		if (mkdirat(dfd, p, 0755) == 0) {
			char *last = strrchr(p, '/');
			_cleanup_close_ int parent = -1;
			if (last) {
				*last = 0;
				parent = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				*last = '/';
				if (parent < 0)
					return -errno;
			}
			int r = fsync_fd(last ? parent : dfd);
			if (r < 0)
				return r;
		} else if (errno != EEXIST)
			return -errno;
		*s = saved;
		if (!saved)
			return 0;
	}
}

static int local_open(struct ferry_blobs *b, const char *where, int create)
{
	if (!*where)
		return -EINVAL;
	if (create) {
		int r = ferry_mkdir_p(where, 0755);
		if (r < 0)
			return r;
	}
	b->dirfd = open(where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->dirfd < 0)
		return -errno;
	/* An absolute path keeps local_dir() valid if the program chdirs. */
	b->dir = realpath(where, NULL);
	if (!b->dir)
		return -errno;
	return 0;
}

static void local_close(struct ferry_blobs *b)
{
	if (b->dirfd >= 0)
		close(b->dirfd);
	b->dirfd = -1;
	free(b->dir);
	b->dir = NULL;
}

/* Opens the directory holding name (creating it with create) and returns
 * the base name inside it; *ret_fd is -1 when that is the root. */
static int local_parent(struct ferry_blobs *b, const char *name, int create, int *ret_fd,
			const char **ret_base)
{
	const char *slash = strrchr(name, '/');
	if (!slash) {
		*ret_fd = -1;
		*ret_base = name;
		return 0;
	}
	_cleanup_free_ char *d = strndup(name, (size_t)(slash - name));
	if (!d)
		return -ENOMEM;
	if (create) {
		int r = mkdirs_at(b->dirfd, d);
		if (r < 0)
			return r;
	}
	int fd = openat(b->dirfd, d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	*ret_base = slash + 1;
	return 0;
}

static int local_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		     int exclusive)
{
	_cleanup_close_ int pfd = -1;
	const char *base;
	int r = local_parent(b, name, 1, &pfd, &base);
	if (r < 0)
		return r;
	int dfd = pfd >= 0 ? pfd : b->dirfd;

	char tmp[64];
	_cleanup_close_ int fd = -1;
	for (int tries = 0; fd < 0; tries++) {
		uint64_t rnd;
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -errno ?: -EIO;
		snprintf(tmp, sizeof(tmp), TMP_PREFIX "%016llx", (unsigned long long)rnd);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0 && (errno != EEXIST || tries > 8))
			return -errno;
	}

	r = ferry_pwrite_all(fd, buf, len, 0);
	if (r >= 0)
		r = fsync_fd(fd);
	if (r >= 0 && close(TAKE_FD(fd)) < 0)
		r = -errno;
	if (r >= 0) {
		if (!exclusive) {
			if (renameat(dfd, tmp, dfd, base) < 0)
				r = -errno;
		} else if (renameat2(dfd, tmp, dfd, base, RENAME_NOREPLACE) < 0) {
			r = -errno;
			/* Filesystems without RENAME_NOREPLACE still give us an
			 * atomic conditional create through link(). */
			if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP) {
				r = linkat(dfd, tmp, dfd, base, 0) < 0 ? -errno : 0;
				unlinkat(dfd, tmp, 0);
			}
		}
	}
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		return r;
	}
	return fsync_fd(dfd);
}

static int local_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			   size_t len)
{
	if (off > (uint64_t)INT64_MAX - len)
		return -EBADMSG;
	_cleanup_close_ int fd = openat(b->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return ferry_pread_all(fd, buf, len, (off_t)off);
}

static int local_get(struct ferry_blobs *b, const char *name, void **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(b->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	if ((uint64_t)st.st_size >= SIZE_MAX)
		return -EFBIG;
	size_t len = (size_t)st.st_size;
	_cleanup_free_ void *buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	int r = ferry_pread_all(fd, buf, len, 0);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static int local_size(struct ferry_blobs *b, const char *name, uint64_t *ret)
{
	struct stat st;
	if (fstatat(b->dirfd, name, &st, 0) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	*ret = (uint64_t)st.st_size;
	return 0;
}

static int local_delete(struct ferry_blobs *b, const char *name)
{
	_cleanup_close_ int pfd = -1;
	const char *base;
	int r = local_parent(b, name, 0, &pfd, &base);
	if (r == -ENOENT || r == -ENOTDIR)
		return 0;
	if (r < 0)
		return r;
	int dfd = pfd >= 0 ? pfd : b->dirfd;
	if (unlinkat(dfd, base, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	/* Without this a crash could bring a deleted blob back. */
	return fsync_fd(dfd);
}

static int local_walk(int dfd, const char *rel, struct blob_list *out)
{
	/* A fresh open even for the root: a dup() would share its directory
	 * offset with every other thread listing. */
	int fd = openat(dfd, rel[0] ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	int r = 0;
	struct dirent *de;
	while (r >= 0 && (errno = 0, de = readdir(d))) {
		size_t n = strlen(de->d_name);
		/* Foreign names and our temp files are not blobs. */
		if (!component_ok(de->d_name, n))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT) /* deleted under us */
				continue;
			r = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
			continue;
		char *full;
		if (asprintf(&full, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			if (strlen(full) < NAME_MAX_LEN)
				r = local_walk(dfd, full, out);
			free(full);
		} else {
			r = blob_list_add(out, full, (uint64_t)st.st_size);
			if (r < 0)
				free(full);
		}
	}
	if (r >= 0 && errno != 0 && !de)
		r = -errno;
	closedir(d);
	return r;
}

static int local_list(struct ferry_blobs *b, const char *dir, struct blob_list *out)
{
	_cleanup_free_ char *rel = strdup(dir);
	if (!rel)
		return -ENOMEM;
	size_t n = strlen(rel);
	if (n > 0 && rel[n - 1] == '/')
		rel[n - 1] = 0;
	return local_walk(b->dirfd, rel, out);
}

static const struct blobs_ops local_ops = {
	.scheme = "file",
	.open = local_open,
	.close = local_close,
	.put = local_put,
	.get_range = local_get_range,
	.get = local_get,
	.size = local_size,
	.del = local_delete,
	.list = local_list,
};

/* --- generic layer --- */

int ferry_blobs_open(const char *url, int create, struct ferry_blobs **ret)
{
	if (!url || !*url)
		return -EINVAL;

	const struct blobs_ops *ops;
	const char *where;
	const char *sep = strstr(url, "://");
	if (!sep) {
		ops = &local_ops;
		where = url;
	} else if (strncmp(url, "file://", 7) == 0) {
		ops = &local_ops;
		where = url + 7;
		/* file://localhost/p is the same as file:///p; other hosts are not ours. */
		if (strncmp(where, "localhost/", 10) == 0)
			where += 9;
		if (where[0] != '/')
			return -EINVAL;
	} else {
		/* azblob:// and s3:// plug in here as further ops tables. */
		for (const char *p = url; p < sep; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+'))
				return -EINVAL;
		return -EPROTONOSUPPORT;
	}

	struct ferry_blobs *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->dirfd = -1;
	b->ops = ops;
	b->url = strdup(url);
	if (!b->url) {
		ferry_blobs_free(b);
		return -ENOMEM;
	}
	int r = ops->open(b, where, create);
	if (r < 0) {
		ferry_blobs_free(b);
		return r;
	}
	*ret = b;
	return 0;
}

struct ferry_blobs *ferry_blobs_free(struct ferry_blobs *b)
{
	if (!b)
		return NULL;
	if (b->ops && b->ops->close)
		b->ops->close(b);
	free(b->url);
	free(b);
	return NULL;
}

const char *ferry_blobs_url(const struct ferry_blobs *b)
{
	return b->url;
}

const char *ferry_blobs_local_dir(const struct ferry_blobs *b)
{
	if (b->fault)
		return NULL;
	return b->ops == &local_ops ? b->dir : NULL;
}

void ferry_blobs_set_fault(struct ferry_blobs *b,
			   int (*fault)(const char *op, const char *name, void *ud), void *ud)
{
	b->fault = fault;
	b->fault_ud = ud;
}

int ferry_blobs_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		    int exclusive)
{
	if (!path_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "put", name);
	if (r < 0)
		return r;
	return b->ops->put(b, name, buf, len, exclusive);
}

int ferry_blobs_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			  size_t len)
{
	if (!path_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "get_range", name);
	if (r < 0)
		return r;
	return b->ops->get_range(b, name, off, buf, len);
}

int ferry_blobs_get(struct ferry_blobs *b, const char *name, void **ret_buf, size_t *ret_len)
{
	if (!path_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "get", name);
	if (r < 0)
		return r;
	if (b->ops->get)
		return b->ops->get(b, name, ret_buf, ret_len);

	uint64_t size;
	r = b->ops->size(b, name, &size);
	if (r < 0)
		return r;
	if (size >= SIZE_MAX)
		return -EFBIG;
	_cleanup_free_ void *buf = malloc(size ? (size_t)size : 1);
	if (!buf)
		return -ENOMEM;
	r = b->ops->get_range(b, name, 0, buf, (size_t)size);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = (size_t)size;
	return 0;
}

int ferry_blobs_size(struct ferry_blobs *b, const char *name, uint64_t *ret)
{
	if (!path_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "size", name);
	if (r < 0)
		return r;
	return b->ops->size(b, name, ret);
}

int ferry_blobs_delete(struct ferry_blobs *b, const char *name)
{
	if (!path_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "delete", name);
	if (r < 0)
		return r;
	return b->ops->del(b, name);
}

static int entry_cmp(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: byte order, as promised. */
	return strcmp(((const struct blob_entry *)a)->name, ((const struct blob_entry *)b)->name);
}

int ferry_blobs_list(struct ferry_blobs *b, const char *prefix,
		     int (*cb)(const char *name, uint64_t size, void *userdata), void *userdata)
{
	if (!prefix)
		prefix = "";
	if (!path_valid(prefix, 1))
		return -EINVAL;
	int r = fault_check(b, "list", prefix);
	if (r < 0)
		return r;

	/* Only walk below the directory the prefix names, not the whole location. */
	const char *slash = strrchr(prefix, '/');
	size_t dlen = slash ? (size_t)(slash - prefix) + 1 : 0;
	_cleanup_free_ char *dir = strndup(prefix, dlen);
	if (!dir)
		return -ENOMEM;

	struct blob_list l = { 0 };
	r = b->ops->list(b, dir, &l);
	if (r >= 0) {
		size_t plen = strlen(prefix), k = 0;
		for (size_t i = 0; i < l.n; i++) {
			if (strncmp(l.v[i].name, prefix, plen) == 0)
				l.v[k++] = l.v[i];
			else
				free(l.v[i].name);
		}
		l.n = k;
		if (l.n > 1)
			qsort(l.v, l.n, sizeof(l.v[0]), entry_cmp);
		/* Collected first, so cb may delete what it is shown. */
		for (size_t i = 0; i < l.n && r >= 0; i++) {
			int q = cb(l.v[i].name, l.v[i].size, userdata);
			if (q < 0)
				r = q;
		}
	}
	blob_list_done(&l);
	return r < 0 ? r : 0;
}
