/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local directory backend of the blobs layer. Puts are atomic and
 * durable: temp file (".tmp-*", never listed), fsync, rename (or a
 * no-replace rename / link for exclusive puts), fsync of the directory.
 * Locks are flock()s on a file named by the lock, so a holder that dies
 * releases its lock with its last file descriptor.
 */
#include "blobs-internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/util.h"

#define TMP_PREFIX ".tmp-"
#define NAME_MAX_LEN 1024

struct local {
	char *dir; /* absolute */
	int dirfd;
};

static struct local *L(const struct ferry_blobs *b)
{
	return b->priv;
}

static int fsync_fd(int fd)
{
	return ferry_fsync(fd);
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
		if (mkdirat(dfd, p, FERRY_DIR_MODE) == 0) {
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

static void local_close(struct ferry_blobs *b)
{
	struct local *l = L(b);
	if (!l)
		return;
	if (l->dirfd >= 0)
		close(l->dirfd);
	free(l->dir);
	free(l);
	b->priv = NULL;
}

static int local_open(struct ferry_blobs *b, const char *where, int create)
{
	if (!*where)
		return -EINVAL;
	if (create) {
		int r = ferry_mkdir_p(where, FERRY_DIR_MODE);
		if (r < 0)
			return r;
	}
	struct local *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	b->priv = l;
	l->dirfd = open(where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* An absolute path keeps local_dir() valid if the program chdirs. */
	if (l->dirfd >= 0)
		l->dir = realpath(where, NULL);
	if (l->dirfd < 0 || !l->dir) {
		int r = -errno;
		local_close(b);
		return r;
	}
	/* Blobs are private whatever made the root (an older ferry, a umask,
	 * mkdir by hand): the root is tightened on every open. Best effort
	 * where not asked to create: a read-only medium still opens. */
	int r = ferry_dir_restrict(l->dirfd, FERRY_DIR_MODE);
	if (r < 0 && create) {
		local_close(b);
		return r;
	}
	return 0;
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
		int r = mkdirs_at(L(b)->dirfd, d);
		if (r < 0)
			return r;
	}
	int fd = openat(L(b)->dirfd, d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
	const char *base = NULL;
	int r = local_parent(b, name, 1, &pfd, &base);
	if (r < 0)
		return r;
	int dfd = pfd >= 0 ? pfd : L(b)->dirfd;

	char tmp[64];
	_cleanup_close_ int fd = -1;
	for (int tries = 0; fd < 0; tries++) {
		uint64_t rnd;
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -errno ?: -EIO;
		snprintf(tmp, sizeof(tmp), TMP_PREFIX "%016llx", (unsigned long long)rnd);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FERRY_FILE_MODE);
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
	_cleanup_close_ int fd = openat(L(b)->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return ferry_pread_all(fd, buf, len, (off_t)off);
}

static int local_get(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
		     size_t *ret_len)
{
	_cleanup_close_ int fd = openat(L(b)->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	/* The size first: a 3 GiB file where a segment should be is refused
	 * before a byte of it is allocated. */
	if ((uint64_t)st.st_size > max)
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
	if (fstatat(L(b)->dirfd, name, &st, 0) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	*ret = (uint64_t)st.st_size;
	return 0;
}

static int local_delete(struct ferry_blobs *b, const char *name)
{
	_cleanup_close_ int pfd = -1;
	const char *base = NULL;
	int r = local_parent(b, name, 0, &pfd, &base);
	if (r == -ENOENT || r == -ENOTDIR)
		return 0;
	if (r < 0)
		return r;
	int dfd = pfd >= 0 ? pfd : L(b)->dirfd;
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
		/* Foreign names and our temp files are not blobs. */
		if (!blobs_name_valid(de->d_name, 0) || strchr(de->d_name, '/'))
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

static int local_list(struct ferry_blobs *b, const char *prefix, struct blob_list *out)
{
	/* Only walk below the directory the prefix names, not the whole location. */
	const char *slash = strrchr(prefix, '/');
	_cleanup_free_ char *rel = strndup(prefix, slash ? (size_t)(slash - prefix) : 0);
	if (!rel)
		return -ENOMEM;
	return local_walk(L(b)->dirfd, rel, out);
}

static int local_lock_acquire(struct ferry_blobs *b, const char *name, unsigned ttl_s,
			      char token[128])
{
	_cleanup_close_ int pfd = -1;
	const char *base = NULL;
	int r = local_parent(b, name, 1, &pfd, &base);
	if (r < 0)
		return r;
	int fd = openat(pfd >= 0 ? pfd : L(b)->dirfd, base, O_RDWR | O_CREAT | O_CLOEXEC,
			FERRY_FILE_MODE);
	if (fd < 0)
		return -errno;
	/* flock belongs to the open file description: a second acquire in
	 * this same process is refused too, as it would be remotely. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return r;
	}
	snprintf(token, 128, "%d", fd);
	return 0;
}

static int token_fd(const char *token)
{
	uint64_t fd;
	if (ferry_parse_u64(token, strlen(token), INT_MAX, &fd) < 0)
		return -EINVAL;
	return (int)fd;
}

static int local_lock_renew(struct ferry_blobs *b, const char *name, const char *token,
			    unsigned ttl_s)
{
	/* A flock does not expire; renewing only checks it is still ours. */
	int fd = token_fd(token);
	if (fd < 0)
		return fd;
	return fcntl(fd, F_GETFD) < 0 ? -EBADF : 0;
}

static int local_lock_release(struct ferry_blobs *b, const char *name, const char *token)
{
	int fd = token_fd(token);
	if (fd < 0)
		return fd;
	return close(fd) < 0 ? -errno : 0;
}

static const char *local_local_dir(const struct ferry_blobs *b)
{
	return L(b)->dir;
}

const struct blobs_ops blobs_local_ops = {
	.scheme = "file",
	.open = local_open,
	.close = local_close,
	.put = local_put,
	.get_range = local_get_range,
	.get = local_get,
	.size = local_size,
	.del = local_delete,
	.list = local_list,
	.lock_acquire = local_lock_acquire,
	.lock_renew = local_lock_renew,
	.lock_release = local_lock_release,
	.local_dir = local_local_dir,
};
