/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Seeds: a starting point for an agent that one site publishes in a cache
 * and the agent takes into its state directory, so that its next cycle
 * ships only the blocks that differ from what the other side holds. The
 * heart of a seed is a fingerprint file of the other side's disk image
 * (FERRY-FP, docs/format/agent-state.md). Re-protect publishes the source
 * site's (seeds/<vm>/...); a resync the vault's image (resync/<vm>/...).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/crypto.h"

struct ferry_blobs;
struct ferry_image;

/*
 * The fingerprints of a vault image of size bytes as a complete FERRY-FP
 * file, in a new buffer: every block read (holes cost nothing), zero
 * blocks as the zero entry. *ret_sum gets its SHA-256.
 */
int seed_fp_image(struct ferry_image *img, uint64_t size, void **ret_buf, size_t *ret_len,
		  struct ferry_id *ret_sum);

/* Where a seed file comes from: its size and ranged reads. */
struct seed_source {
	int (*size)(void *userdata, uint64_t *ret);
	int (*get_range)(void *userdata, uint64_t off, void *buf, size_t len);
	void *userdata;
};
/* A blob of a blobs location as a source (b and name must outlive it). */
struct seed_blob {
	struct ferry_blobs *b;
	const char *name;
};
struct seed_source seed_blob_source(struct seed_blob *sb);

/* Puts the file at path as blob name, replacing it. */
int seed_publish(struct ferry_blobs *b, const char *name, const char *path);

/*
 * Copies src into path, atomically and durably (a temporary file, synced,
 * renamed), reading it in pieces. With want_sum, its SHA-256 must equal it;
 * with ret_fp_size, it must be a complete fingerprint file, and the disk
 * size it describes is returned there. -EBADMSG when either check fails
 * (nothing is written then); -ENOENT when src is missing.
 */
int seed_fetch(const struct seed_source *src, const char *path, const struct ferry_id *want_sum,
	       uint64_t *ret_fp_size);
