/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers shared by every module: cleanup attributes, ownership
 * hand-over, endian-safe integer encoding, a few constants of the data
 * model, and (util.c) file I/O, clocks, names, decimal numbers and times.
 * Nothing here allocates behind the caller's back.
 */
#pragma once

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The map granularity: VMs write 4 KiB blocks, so maps track 4 KiB blocks. */
#define FERRY_BLOCK_SIZE 4096u
#define FERRY_BLOCK_SHIFT 12
/* Default and bounds of the vault-wide chunk size. */
#define FERRY_CHUNK_SIZE_DEFAULT (64u * 1024u)
#define FERRY_CHUNK_SIZE_MIN (16u * 1024u)
#define FERRY_CHUNK_SIZE_MAX (1024u * 1024u)

#define _cleanup_(f) __attribute__((cleanup(f)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* clang-format would take (b) for a cast and write (b)-1. */
/* clang-format off */
#define DIV_ROUND_UP(a, b) (((a) + (b) - 1) / (b))
/* clang-format on */

/* Hand ownership on: returns the pointer and clears the variable. */
#define TAKE_PTR(p)                      \
	({                               \
		__typeof__(p) _p_ = (p); \
		(p) = NULL;              \
		_p_;                     \
	})
#define TAKE_FD(fd)              \
	({                       \
		int _fd_ = (fd); \
		(fd) = -1;       \
		_fd_;            \
	})

static inline void freep(void *p)
{
	free(*(void **)p);
}
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Declares a cleanup helper for a type with a NULL-accepting _free(). */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
	static inline void func##p(type *p)     \
	{                                       \
		if (*p)                         \
			func(*p);               \
	}

/* Little-endian field access for on-disk and on-wire formats, one line each as a table. */
/* clang-format off */
static inline void put_le16(void *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void put_le32(void *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put_le64(void *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint16_t get_le16(const void *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint32_t get_le32(const void *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t get_le64(const void *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
/* clang-format on */

/* Writes all of buf at off; -errno on failure (a short write is -EIO). */
int ferry_pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* Reads exactly len bytes at off; -EBADMSG if the file ends early. */
int ferry_pread_all(int fd, void *buf, size_t len, off_t off);
/* Private by default: what ferry creates is its user's alone, whatever the
 * umask (docs/architecture.md, "Permissions"). */
#define FERRY_FILE_MODE 0600
#define FERRY_DIR_MODE 0700

/* Writes a whole file atomically: temp file, fsync, rename, fsync of dir.
 * The file is FERRY_FILE_MODE. */
int ferry_write_file_atomic(const char *path, const void *buf, size_t len);
/* The same but for the last step, with mode (whatever the umask): once
 * it returns 0 the new file is in place, and the caller decides what a
 * failed ferry_fsync_parent(path) means. */
int ferry_write_file_replace(const char *path, const void *buf, size_t len, unsigned mode);
/* Reads a whole file into a new buffer (NUL-terminated for convenience). */
int ferry_read_file(const char *path, void **ret_buf, size_t *ret_len);
/* mkdir -p, missing directories made with mode; existing ones are fine,
 * but the last one is restricted to mode as ferry_dir_restrict does. */
int ferry_mkdir_p(const char *path, mode_t mode);
/* Takes the permission bits outside mode off the directory dfd, where this
 * process may (it owns the directory, or is root) and the directory is not
 * a shared one (sticky, as /tmp is: what ferry makes inside is private
 * anyway). 1 if it changed the mode, 0 if there was nothing to do. */
int ferry_dir_restrict(int dfd, mode_t mode);
/* fsync(2), -errno; the fault-injection seam of every fsync (fault.h). */
int ferry_fsync(int fd);
/* fsync of the directory that holds path. */
int ferry_fsync_parent(const char *path);
/* Current time, seconds and nanoseconds since the epoch (CLOCK_REALTIME). */
int64_t ferry_now_ns(void);
/* Nanoseconds on CLOCK_MONOTONIC, for intervals and deadlines. */
int64_t ferry_mono_ns(void);
/* now - then and s seconds in nanoseconds, saturated at INT64_MIN and
 * INT64_MAX: times come from segments, store records and the catalog,
 * and no arithmetic on them may overflow. */
int64_t ferry_time_since(int64_t now, int64_t then);
int64_t ferry_seconds_ns(int64_t s);
/* "2026-01-31T23:59:59Z" and its NUL. */
#define FERRY_TIME_STRING_SIZE 21
/*
 * A time in nanoseconds since the epoch as ISO 8601 in UTC, to the second
 * (truncated): "2026-01-31T23:59:59Z", the one form every program and
 * vm.conf print. A negative time (none, or damage) is "unknown", and so is
 * one that does not fit in size bytes (give FERRY_TIME_STRING_SIZE).
 */
void ferry_format_time(int64_t ns, char *buf, size_t size);
/*
 * Runs fn(arg) on up to n threads at once, the caller's among them, and
 * returns when every one has returned. fn must take its work from arg (a
 * shared counter, say) until none is left, so that fewer threads, where
 * some cannot be started, do the same work.
 */
void ferry_run_parallel(void *(*fn)(void *), void *arg, unsigned n);
/* The value of a hexadecimal digit of either case, -1 for any other char. */
static inline int ferry_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
/*
 * The one parser of unsigned decimal numbers, for formats and for options
 * alike: s[0..len) must be one or more ASCII digits and nothing else (no
 * sign, no whitespace, no "0x"; s need not be NUL-terminated, a NUL inside
 * is a non-digit). Leading zeros are accepted: a format that refuses them
 * checks s[0] at its call site. -EINVAL for an empty string or one with a
 * non-digit (whatever its length), -ERANGE for a value above max (or above
 * 2^64-1). *ret is written only on success.
 */
int ferry_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *ret);
/*
 * A name is safe for a VM, disk or clone when it is 1..64 bytes of
 * [A-Za-z0-9._-], does not start with '.' or '-': it becomes a path
 * component, an object name and a SQL value.
 */
int ferry_name_valid(const char *name);
