/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The contract between the generic blobs layer (blobs.c: URL dispatch, name
 * validation, fault seam, sorted listings, options) and its backends:
 * blobs-local.c (a directory), blobs-azure.c (Azure Blob Storage REST),
 * blobs-s3.c (S3 REST with SigV4). Names reaching a backend are already
 * validated. Backends return -errno as blobs.h documents.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/blobs.h"

struct blob_entry {
	char *name; /* relative to the location, malloc'd */
	uint64_t size;
};

/* What a backend's list gathers; the generic layer filters and sorts it. */
struct blob_list {
	struct blob_entry *v;
	size_t n, cap;
};

/* Takes ownership of name. */
int blob_list_add(struct blob_list *l, char *name, uint64_t size);

struct blobs_ops {
	const char *scheme; /* "file", "azblob", "s3" */
	/* where: the URL without "scheme://" (for file: the path). */
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
	/* Adds every blob whose name starts with prefix (any string). */
	int (*list)(struct ferry_blobs *b, const char *prefix, struct blob_list *out);
	/* Locks (ferry_blobs_lock_*): token is backend-defined (lease id,
	 * lock object etag, fd number), at most 127 bytes. */
	int (*lock_acquire)(struct ferry_blobs *b, const char *name, unsigned ttl_s,
			    char token[128]);
	int (*lock_renew)(struct ferry_blobs *b, const char *name, const char *token,
			  unsigned ttl_s);
	int (*lock_release)(struct ferry_blobs *b, const char *name, const char *token);
	/* Optional: local directory for the store's pread fast path. */
	const char *(*local_dir)(const struct ferry_blobs *b);
};

struct ferry_blobs {
	const struct blobs_ops *ops;
	char *url; /* as given, never holding a secret */
	int (*fault)(const char *op, const char *name, void *ud);
	void *fault_ud;
	void *priv; /* the backend's state */
};

/* The options set by ferry_blobs_set_options (zeroed when never set). */
const struct ferry_blobs_options *blobs_options(void);

extern const struct blobs_ops blobs_local_ops;
extern const struct blobs_ops blobs_azure_ops;
extern const struct blobs_ops blobs_s3_ops;
