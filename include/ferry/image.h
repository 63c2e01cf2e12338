/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading a disk image out of a vault: a map (root, size) turned back into
 * bytes. Holds a small cache of decompressed, verified chunks shared by all
 * images of a vault reader, so sequential reads decompress each chunk once,
 * and reads ahead of sequential readers with a few background threads.
 * Thread-safe: ferryfs calls it from many threads.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ferry/crypto.h"
#include "ferry/vault.h"

struct ferry_chunk_cache;

/* A cache of at most max_bytes of decompressed chunks (LRU). */
int ferry_chunk_cache_new(struct ferry_vault *v, size_t max_bytes, struct ferry_chunk_cache **ret);
struct ferry_chunk_cache *ferry_chunk_cache_free(struct ferry_chunk_cache *cc);
/*
 * Read-ahead: once an image is read sequentially, the next `chunks` chunks
 * after each read are loaded into the cache by `threads` background threads
 * (at most a quarter of the cache's bytes; chunks <= 1024, threads <= 64;
 * 0 of either turns it off, a negative value keeps the current one; -EINVAL
 * above the limits). Defaults: 128 chunks and 2 threads on a local store,
 * 256 chunks and 4 threads on object storage. Threads start with the first
 * read-ahead, not here (a program may fork in between); a lower thread
 * count leaves started threads idle rather than stopping them.
 */
int ferry_chunk_cache_set_prefetch(struct ferry_chunk_cache *cc, int chunks, int threads);
/* Drops every cached chunk, as if evicted (readers holding one keep it),
 * but not the locations remembered for them: the next read of each loads
 * it again from where it was last found. */
void ferry_chunk_cache_drop(struct ferry_chunk_cache *cc);

struct ferry_image;

int ferry_image_open(struct ferry_chunk_cache *cc, const struct ferry_id *root, uint64_t size,
		     struct ferry_image **ret);
struct ferry_image *ferry_image_free(struct ferry_image *img);
uint64_t ferry_image_size(const struct ferry_image *img);

/* Reads up to len bytes at off; returns the count (short only at the end),
 * or -errno (-EBADMSG where the vault is damaged). */
ssize_t ferry_image_read(struct ferry_image *img, void *buf, size_t len, uint64_t off);
/*
 * Zero-copy reads, for a caller that hands the bytes on with writev(2) (a
 * FUSE reply): ferry_image_read_iov() is ferry_image_read() without the
 * copy. It describes the bytes of [off, off + len) as pieces of the cache's
 * own verified chunks (and of a shared zero buffer for holes), in v, and
 * keeps those chunks alive until ferry_image_iov_release(v), which the
 * caller must call before the next read into v. Returns the byte count
 * (short only at the end of the image) and sets *ret_iov to v's pieces,
 * *ret_n of them: at most max_pieces, or -E2BIG (nothing held) where more
 * would be needed; otherwise the errors of ferry_image_read(). A v serves
 * one read at a time; keep one per thread.
 */
struct ferry_image_iov;
int ferry_image_iov_new(struct ferry_image_iov **ret);
/* Releases what v still holds. */
struct ferry_image_iov *ferry_image_iov_free(struct ferry_image_iov *v);
ssize_t ferry_image_read_iov(struct ferry_image *img, size_t len, uint64_t off,
			     struct ferry_image_iov *v, size_t max_pieces,
			     const struct iovec **ret_iov, size_t *ret_n);
void ferry_image_iov_release(struct ferry_image_iov *v);

/* SEEK_DATA / SEEK_HOLE semantics at 4 KiB granularity: the next offset
 * >= off that is data (whence SEEK_DATA) or a hole (SEEK_HOLE); -ENXIO as
 * lseek(2) does. */
int ferry_image_seek(struct ferry_image *img, uint64_t off, int whence, uint64_t *ret);
