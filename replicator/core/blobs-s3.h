/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test hooks of the S3 blobs backend (blobs-s3.c), kept out of the public
 * headers: a small ListObjectsV2 page size so that tests cover pagination
 * with a handful of objects, and a fault seam under its HTTP client.
 */
#pragma once

#include "blobs-internal.h"

/* 0 restores the server's default (1000). No-op on a non-S3 location. */
void blobs_s3_set_max_keys(struct ferry_blobs *b, unsigned n);
int blobs_s3_set_http_fault(struct ferry_blobs *b,
			    int (*fault)(const char *method, const char *url, void *ud), void *ud);
