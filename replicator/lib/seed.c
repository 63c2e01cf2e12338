/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Seeds (seed.h): fingerprint files made from a vault image, and seed files
 * carried between a cache and an agent's state directory. A fingerprint
 * file is 0.4 % of its disk: it is built in a memfd (sparse where the disk
 * is) and read and written in pieces, never as one allocation on the
 * agent's side. The format code is the scan tracker's (agent_fp_*), so a
 * seed is exactly what the tracker itself would have left.
 */
#include "seed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent-scan.h"
#include "ferry/blobs.h"
#include "ferry/image.h"
#include "ferry/util.h"

#define BLOCK FERRY_BLOCK_SIZE
#define READ_SIZE (1024u * 1024u)
#define FP_HDR 64u
#define FP_ENTRY 16u
/* Pieces in which seed files travel. */
#define PIECE (16u * 1024u * 1024u)

/* Fingerprints of [off, end) of the image, read in READ_SIZE pieces, into
 * the entries of fd; all-zero pieces write nothing (the file is sparse). */
static int fp_region(struct ferry_image *img, uint64_t size, int fd, uint64_t off, uint64_t end,
		     uint8_t *buf, uint8_t *entries)
{
	while (off < end) {
		size_t n = (size_t)MIN((uint64_t)READ_SIZE, end - off);
		ssize_t got = ferry_image_read(img, buf, (size_t)MIN((uint64_t)n, size - off), off);
		if (got < 0)
			return (int)got;
		memset(buf + got, 0, n - (size_t)got); /* a partial last block reads as zeros */
		size_t nb = DIV_ROUND_UP(n, BLOCK);
		int any = 0;
		for (size_t i = 0; i < nb; i++) {
			agent_fp_entry(buf + i * BLOCK, entries + i * FP_ENTRY);
			any |= (get_le64(entries + i * FP_ENTRY) |
				get_le64(entries + i * FP_ENTRY + 8)) != 0;
		}
		if (any) {
			int r = ferry_pwrite_all(fd, entries, nb * FP_ENTRY,
						 (off_t)(FP_HDR + off / BLOCK * FP_ENTRY));
			if (r < 0)
				return r;
		}
		off += n;
	}
	return 0;
}

static int fp_walk(struct ferry_image *img, uint64_t size, int fd)
{
	_cleanup_free_ uint8_t *buf = malloc(READ_SIZE + BLOCK);
	_cleanup_free_ uint8_t *entries = malloc(READ_SIZE / BLOCK * FP_ENTRY + FP_ENTRY);
	if (!buf || !entries)
		return -ENOMEM;
	uint64_t aligned = DIV_ROUND_UP(size, BLOCK) * BLOCK;
	for (uint64_t off = 0; off < aligned;) {
		uint64_t data, hole;
		int r = ferry_image_seek(img, off, SEEK_DATA, &data);
		if (r == -ENXIO)
			break;
		if (r < 0)
			return r;
		r = ferry_image_seek(img, data, SEEK_HOLE, &hole);
		if (r == -ENXIO)
			hole = aligned;
		else if (r < 0)
			return r;
		data = data / BLOCK * BLOCK;
		hole = MIN(DIV_ROUND_UP(MAX(hole, data + 1), BLOCK) * BLOCK, aligned);
		r = fp_region(img, size, fd, data, hole, buf, entries);
		if (r < 0)
			return r;
		off = hole;
	}
	return 0;
}

int seed_fp_image(struct ferry_image *img, uint64_t size, void **ret_buf, size_t *ret_len,
		  struct ferry_id *ret_sum)
{
	if (size == 0)
		return -EINVAL;
	_cleanup_close_ int fd = memfd_create("ferry-seed", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = agent_fp_create(fd, size);
	if (r >= 0)
		r = fp_walk(img, size, fd);
	if (r >= 0)
		r = agent_fp_seal(fd);
	if (r < 0)
		return r;
	size_t len = FP_HDR + DIV_ROUND_UP(size, BLOCK) * FP_ENTRY;
	_cleanup_free_ void *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	r = ferry_pread_all(fd, buf, len, 0);
	if (r < 0)
		return r;
	ferry_sha256(buf, len, ret_sum);
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static int blob_size(void *userdata, uint64_t *ret)
{
	struct seed_blob *sb = userdata;
	return ferry_blobs_size(sb->b, sb->name, ret);
}

static int blob_get_range(void *userdata, uint64_t off, void *buf, size_t len)
{
	struct seed_blob *sb = userdata;
	return ferry_blobs_get_range(sb->b, sb->name, off, buf, len);
}

struct seed_source seed_blob_source(struct seed_blob *sb)
{
	return (struct seed_source){ blob_size, blob_get_range, sb };
}

int seed_publish(struct ferry_blobs *b, const char *name, const char *path)
{
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_read_file(path, &buf, &len);
	return r < 0 ? r : ferry_blobs_put(b, name, buf, len, 0);
}

/* Copies src into fd in pieces; holes stay holes. */
static int copy_in(const struct seed_source *src, uint64_t size, int fd, struct ferry_id *ret_sum)
{
	_cleanup_free_ uint8_t *buf = malloc(PIECE);
	struct ferry_sha256_ctx *h = NULL;
	int r = buf ? ferry_sha256_new(&h) : -ENOMEM;
	for (uint64_t off = 0; r >= 0 && off < size;) {
		size_t n = (size_t)MIN((uint64_t)PIECE, size - off);
		r = src->get_range(src->userdata, off, buf, n);
		if (r < 0)
			break;
		ferry_sha256_update(h, buf, n);
		size_t z = 0;
		while (z < n && buf[z] == 0)
			z++;
		if (z < n)
			r = ferry_pwrite_all(fd, buf, n, (off_t)off);
		off += n;
	}
	if (r >= 0 && ftruncate(fd, (off_t)size) < 0)
		r = -errno;
	if (r >= 0)
		ferry_sha256_final(h, ret_sum);
	ferry_sha256_free(h);
	return r;
}

int seed_fetch(const struct seed_source *src, const char *path, const struct ferry_id *want_sum,
	       uint64_t *ret_fp_size)
{
	uint64_t size;
	int r = src->size(src->userdata, &size);
	if (r < 0)
		return r;
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd =
		open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, FERRY_FILE_MODE);
	if (fd < 0)
		return -errno;
	struct ferry_id sum;
	uint64_t fp_size = 0;
	r = copy_in(src, size, fd, &sum);
	if (r >= 0 && want_sum && !ferry_id_equal(&sum, want_sum))
		r = -EBADMSG;
	if (r >= 0 && ret_fp_size)
		r = agent_fp_check(fd, &fp_size);
	if (r == -EPROTONOSUPPORT)
		r = -EBADMSG;
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r >= 0)
		r = ferry_fsync_parent(path);
	if (r < 0) {
		(void)unlink(tmp);
		return r;
	}
	if (ret_fp_size)
		*ret_fp_size = fp_size;
	return 0;
}
