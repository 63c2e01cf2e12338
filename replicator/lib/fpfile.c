/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qemu tracker's fingerprint file (fpfile.h). A 64-byte header, then
 * 16 bytes per block, little-endian:
 *   0  magic "FERRY-QF"     8  major (u16) = 1, minor (u16) = 0
 *   12 flags (u32): bit 0 = baseline, bit 1 = a full compare is due
 *   16 disk size (u64)     24 blocks (u64)
 *   32 XXH3-128 of bytes 0..31, low then high half
 *   48 reserved, zero
 * Entries of blocks never written are holes and read as zero, the
 * fingerprint of a zero block.
 */
#include "fpfile.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/util.h"

#define MAGIC "FERRY-QF"
#define MAJOR 1
#define HDR 64u
#define ENTRY 16u
#define FLAG_BASELINE 1u
#define FLAG_FULL_DUE 2u

struct fpfile {
	int fd;
	uint64_t size, nblocks;
	uint32_t flags;
};

static off_t pos(uint64_t block)
{
	return (off_t)(HDR + block * ENTRY);
}

static void header_build(uint8_t h[HDR], const struct fpfile *f)
{
	memset(h, 0, HDR);
	memcpy(h, MAGIC, 8);
	put_le16(h + 8, MAJOR);
	put_le16(h + 10, 0);
	put_le32(h + 12, f->flags);
	put_le64(h + 16, f->size);
	put_le64(h + 24, f->nblocks);
	struct ferry_fp sum;
	ferry_fingerprint(h, 32, &sum);
	put_le64(h + 32, sum.lo);
	put_le64(h + 40, sum.hi);
}

/* 0 when the header is ours and fits size; -EBADMSG otherwise. */
static int header_check(const uint8_t h[HDR], uint64_t size, uint32_t *ret_flags)
{
	struct ferry_fp sum;
	ferry_fingerprint(h, 32, &sum);
	if (memcmp(h, MAGIC, 8) != 0 || get_le16(h + 8) != MAJOR || get_le64(h + 32) != sum.lo ||
	    get_le64(h + 40) != sum.hi || get_le64(h + 16) != size ||
	    get_le64(h + 24) != DIV_ROUND_UP(size, FERRY_BLOCK_SIZE))
		return -EBADMSG;
	*ret_flags = get_le32(h + 12);
	return 0;
}

static int header_write(struct fpfile *f)
{
	uint8_t h[HDR];
	header_build(h, f);
	return ferry_pwrite_all(f->fd, h, HDR, 0);
}

int fpfile_open(const char *path, uint64_t size, struct fpfile **ret)
{
	_cleanup_free_ struct fpfile *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->size = size;
	f->nblocks = DIV_ROUND_UP(size, FERRY_BLOCK_SIZE);
	f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (f->fd < 0)
		return -errno;
	uint8_t h[HDR];
	struct stat st;
	int r = ferry_pread_all(f->fd, h, HDR, 0);
	if (r >= 0 && fstat(f->fd, &st) == 0 && (uint64_t)st.st_size == (uint64_t)pos(f->nblocks))
		r = header_check(h, size, &f->flags);
	else
		r = -EBADMSG;
	if (r < 0) {
		/* Started over: no baseline, every entry zero. */
		f->flags = 0;
		r = ftruncate(f->fd, 0) < 0 || ftruncate(f->fd, pos(f->nblocks)) < 0 ?
			    -errno :
			    header_write(f);
		if (r < 0) {
			close(f->fd);
			return r;
		}
	}
	*ret = TAKE_PTR(f);
	return 0;
}

struct fpfile *fpfile_free(struct fpfile *f)
{
	if (f) {
		close(f->fd);
		free(f);
	}
	return NULL;
}

int fpfile_has_baseline(const struct fpfile *f)
{
	return (f->flags & FLAG_BASELINE) != 0;
}

int fpfile_full_due(const struct fpfile *f)
{
	return (f->flags & FLAG_FULL_DUE) != 0;
}

int fpfile_set_baseline(struct fpfile *f)
{
	if (fdatasync(f->fd) < 0)
		return -errno;
	f->flags |= FLAG_BASELINE;
	f->flags &= ~FLAG_FULL_DUE;
	int r = header_write(f);
	return r < 0 ? r : fdatasync(f->fd) < 0 ? -errno : 0;
}

void fpfile_block(const void *data, struct ferry_fp *ret)
{
	const uint64_t *w = data;
	for (size_t i = 0; i < FERRY_BLOCK_SIZE / sizeof(*w); i++)
		if (w[i]) {
			ferry_fingerprint(data, FERRY_BLOCK_SIZE, ret);
			return;
		}
	*ret = (struct ferry_fp){ 0, 0 };
}

int fpfile_get(struct fpfile *f, uint64_t block, uint32_t n, struct ferry_fp *ret)
{
	if (block > f->nblocks || n > f->nblocks - block)
		return -ERANGE;
	uint8_t buf[4096 * ENTRY];
	for (uint32_t done = 0; done < n;) {
		uint32_t k = MIN(n - done, 4096u);
		int r = ferry_pread_all(f->fd, buf, (size_t)k * ENTRY, pos(block + done));
		if (r < 0)
			return r;
		for (uint32_t i = 0; i < k; i++)
			ret[done + i] = (struct ferry_fp){ get_le64(buf + i * ENTRY),
							   get_le64(buf + i * ENTRY + 8) };
		done += k;
	}
	return 0;
}

int fpfile_put(struct fpfile *f, uint64_t block, uint32_t n, const struct ferry_fp *fps)
{
	if (block > f->nblocks || n > f->nblocks - block)
		return -ERANGE;
	uint8_t buf[4096 * ENTRY];
	for (uint32_t done = 0; done < n;) {
		uint32_t k = MIN(n - done, 4096u);
		for (uint32_t i = 0; i < k; i++) {
			put_le64(buf + i * ENTRY, fps[done + i].lo);
			put_le64(buf + i * ENTRY + 8, fps[done + i].hi);
		}
		int r = ferry_pwrite_all(f->fd, buf, (size_t)k * ENTRY, pos(block + done));
		if (r < 0)
			return r;
		done += k;
	}
	return 0;
}

int fpfile_zero(struct fpfile *f, uint64_t block, uint64_t n)
{
	if (block > f->nblocks || n > f->nblocks - block)
		return -ERANGE;
	if (n == 0)
		return 0;
	off_t off = pos(block), len = pos(block + n) - off;
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	static const uint8_t zeros[64 * 1024];
	while (len > 0) {
		size_t k = (size_t)MIN((off_t)sizeof(zeros), len);
		int r = ferry_pwrite_all(f->fd, zeros, k, off);
		if (r < 0)
			return r;
		off += (off_t)k;
		len -= (off_t)k;
	}
	return 0;
}

/* Copies the entries of src (from src_off on) into f, leaving holes where
 * they are zero. */
static int copy_entries(struct fpfile *f, int src, off_t src_off)
{
	const size_t piece = 4096 * ENTRY;
	_cleanup_free_ uint8_t *buf = malloc(piece);
	if (!buf)
		return -ENOMEM;
	static const uint8_t zero[ENTRY];
	for (uint64_t b = 0; b < f->nblocks;) {
		size_t n = (size_t)MIN((uint64_t)4096, f->nblocks - b);
		int r = ferry_pread_all(src, buf, n * ENTRY, src_off + (off_t)(b * ENTRY));
		if (r < 0)
			return r;
		int any = 0;
		for (size_t i = 0; i < n && !any; i++)
			any = memcmp(buf + i * ENTRY, zero, ENTRY) != 0;
		if (any) {
			r = ferry_pwrite_all(f->fd, buf, n * ENTRY, pos(b));
			if (r < 0)
				return r;
		}
		b += n;
	}
	return 0;
}

int fpfile_install(const char *path, uint64_t size, int src, off_t src_off)
{
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return -ENOMEM;
	struct fpfile f = { .size = size, .nblocks = DIV_ROUND_UP(size, FERRY_BLOCK_SIZE) };
	f.flags = FLAG_BASELINE | FLAG_FULL_DUE;
	f.fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (f.fd < 0)
		return -errno;
	int r = ftruncate(f.fd, pos(f.nblocks)) < 0 ? -errno : 0;
	if (r >= 0)
		r = copy_entries(&f, src, src_off);
	if (r >= 0)
		r = header_write(&f);
	if (r >= 0 && fsync(f.fd) < 0)
		r = -errno;
	close(f.fd);
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r >= 0)
		r = ferry_fsync_parent(path);
	if (r < 0)
		(void)unlink(tmp);
	return r;
}
