/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test hooks of the S3 blobs backend (blobs-s3.c), kept out of the public
 * headers: a small ListObjectsV2 page size so that tests cover pagination
 * with a handful of objects, and the ListObjectsV2 page parser for its fuzz
 * target.
 */
#pragma once

#include "blobs-internal.h"

/*
 * One ListObjectsV2 response page (body, body_len bytes, not NUL-terminated;
 * NULL is -EBADMSG): adds every key longer than prefix that starts with it,
 * relative to it, to out, and sets the continuation token (NULL on the last
 * page). -EBADMSG on malformed XML or a malformed listing, and then adds
 * nothing. Exposed for the fuzz target.
 */
int s3_list_parse(const char *prefix, const char *body, size_t body_len, struct blob_list *out,
		  char **ret_next);

/* 0 restores the server's default (1000). No-op on a non-S3 location. */
void blobs_s3_set_max_keys(struct ferry_blobs *b, unsigned n);
