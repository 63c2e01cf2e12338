/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * File helpers with the durability rules every format relies on: whole
 * writes, exact reads, and atomic replacement (temp file, fsync, rename,
 * fsync of the directory) so a crash leaves the old file or the new one;
 * directories made and kept private (FERRY_DIR_MODE, whatever the umask);
 * and the small helpers every module shares rather than copies: clocks,
 * threads, names, and the one parser of decimal numbers and the one form
 * of a printed time.
 */
#include "ferry/util.h"

#include <assert.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "ferry/fault.h"

/* Threads ferry_run_parallel starts at most, the caller's included. */
#define PARALLEL_MAX 64u

static int pwrite_loop(int fd, const uint8_t *p, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int ferry_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	int r = ferry_fault_before(FERRY_FAULT_WRITE, NULL);
	if (r == FERRY_FAULT_SHORT) {
		/* A disk that filled up in the middle: half the bytes land. */
		r = pwrite_loop(fd, buf, len / 2, off);
		return r < 0 ? r : -ENOSPC;
	}
	if (r < 0)
		return r;
	r = pwrite_loop(fd, buf, len, off);
	if (r < 0)
		return r;
	ferry_fault_after(FERRY_FAULT_WRITE);
	return 0;
}

int ferry_pread_all(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EBADMSG;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int ferry_fsync(int fd)
{
	int r = ferry_fault_before(FERRY_FAULT_FSYNC, NULL);
	if (r < 0)
		return r;
	if (fsync(fd) < 0)
		return -errno;
	ferry_fault_after(FERRY_FAULT_FSYNC);
	return 0;
}

int ferry_fsync_parent(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	_cleanup_close_ int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return ferry_fsync(fd);
}

int ferry_write_file_replace(const char *path, const void *buf, size_t len, unsigned mode)
{
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
		return -ENOMEM;

	/* A temp file left by a crash keeps its mode through O_TRUNC: start
	 * afresh so the file is FERRY_FILE_MODE whoever made the old one. */
	if (unlink(tmp) < 0 && errno != ENOENT)
		return -errno;
	_cleanup_close_ int fd =
		open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
	if (fd < 0)
		return -errno;
	int r = fchmod(fd, mode & 0777) < 0 ? -errno : 0;
	if (r >= 0)
		r = ferry_pwrite_all(fd, buf, len, 0);
	if (r >= 0)
		r = ferry_fsync(fd);
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return 0;
}

int ferry_write_file_atomic(const char *path, const void *buf, size_t len)
{
	int r = ferry_write_file_replace(path, buf, len, FERRY_FILE_MODE);
	if (r < 0)
		return r;
	return ferry_fsync_parent(path);
}

int ferry_read_file(const char *path, void **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size > SIZE_MAX - 1)
		return -EFBIG;
	size_t len = (size_t)st.st_size;
	_cleanup_free_ char *buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	int r = ferry_pread_all(fd, buf, len, 0);
	if (r < 0)
		return r == -EBADMSG ? -EAGAIN : r; /* shrank while we read */
	buf[len] = 0;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

int ferry_dir_restrict(int dfd, mode_t mode)
{
	struct stat st;
	if (fstat(dfd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (!(st.st_mode & 0777 & ~mode) || (st.st_mode & S_ISVTX))
		return 0;
	if (st.st_uid != geteuid() && geteuid() != 0)
		return 0;
	if (fchmod(dfd, st.st_mode & 07777 & ~(0777 & ~mode)) < 0)
		return -errno;
	return 1;
}

int ferry_mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	/* An existing directory is tightened too: one that an older ferry or
	 * the umask left open to others would show what we put inside. */
	_cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = ferry_dir_restrict(fd, mode);
	return r < 0 ? r : 0;
}

int64_t ferry_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ferry_time_since(int64_t now, int64_t then)
{
	int64_t d;
	if (__builtin_sub_overflow(now, then, &d))
		return now > then ? INT64_MAX : INT64_MIN;
	return d;
}

int64_t ferry_seconds_ns(int64_t s)
{
	int64_t ns;
	if (__builtin_mul_overflow(s, INT64_C(1000000000), &ns))
		return s > 0 ? INT64_MAX : INT64_MIN;
	return ns;
}

int64_t ferry_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ferry_format_time(int64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;

	assert(buf && size > 0);
	if (ns < 0 || !gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "unknown");
}

void ferry_run_parallel(void *(*fn)(void *), void *arg, unsigned n)
{
	pthread_t tids[PARALLEL_MAX];
	unsigned started = 0;
	for (unsigned t = 1; t < MIN(n, PARALLEL_MAX); t++) {
		if (pthread_create(&tids[started], NULL, fn, arg) != 0)
			break; /* fewer threads, same work */
		started++;
	}
	fn(arg);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
}

int ferry_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

int ferry_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;
	bool over = false;

	assert(s || len == 0);
	assert(ret);
	if (len == 0)
		return -EINVAL;
	/* Every byte is looked at, so that garbage is -EINVAL however many
	 * digits come before it. */
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		unsigned d = (unsigned)(s[i] - '0');
		if (over || v > (UINT64_MAX - d) / 10)
			over = true;
		else
			v = v * 10 + d;
	}
	if (over || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}
