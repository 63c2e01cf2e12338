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
#include <stdlib.h>

#include "ferry/blobs.h"
#include "ferry/http.h"

struct blob_entry {
	char *name; /* relative to the location, malloc'd */
	uint64_t size;
};

/* What a backend's list gathers; the generic layer filters and sorts it. */
struct blob_list {
	struct blob_entry *v;
	size_t n, cap;
	size_t max; /* entries it takes; 0 = FERRY_BLOBS_LIST_MAX (tests set less) */
};

/* Takes ownership of name (only on success). -E2BIG once the list holds
 * its max entries. */
int blob_list_add(struct blob_list *l, char *name, uint64_t size);

/* Pages one object-store listing may take: a server that keeps handing
 * out continuation markers (empty pages, a cycle of markers) ends the
 * listing with -E2BIG instead of keeping it going for ever. */
#define BLOBS_LIST_MAX_PAGES 65536u
/* A continuation marker longer than this is not one a server made. */
#define BLOBS_LIST_MARKER_MAX 4096u

/* Frees the entries from n on: a listing page that fails adds nothing. */
static inline void blob_list_truncate(struct blob_list *l, size_t n)
{
	while (l->n > n)
		free(l->v[--l->n].name);
}

struct blobs_ops {
	const char *scheme; /* "file", "azblob", "s3" */
	/* where: the URL without "scheme://" (for file: the path). */
	int (*open)(struct ferry_blobs *b, const char *where, int create);
	void (*close)(struct ferry_blobs *b);
	int (*put)(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		   int exclusive);
	int (*get_range)(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			 size_t len);
	/* Optional: whole-blob read, -EFBIG for a blob over max bytes before
	 * anything is allocated for it; NULL means size + get_range. */
	int (*get)(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
		   size_t *ret_len);
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

/* 1 when s is a valid blob name (is_prefix 0) or listing prefix (1): the
 * rule blobs.h states, checked once in the generic layer. */
int blobs_name_valid(const char *s, int is_prefix);

/* 0 when requests may go to the endpoint url ("http[s]://authority..."):
 * https, or plain http to this machine (127.0.0.0/8, ::1, localhost: an
 * emulator such as Azurite or moto) or with insecure_http set; otherwise
 * -ENOPROTOOPT (plain http elsewhere would carry keys and data in the
 * clear), or -EINVAL for another scheme or no host. Checked before any
 * connection is made. */
int blobs_endpoint_allowed(const char *url, int insecure_http);

/* The HTTP policy of the options (timeouts, retries, CA bundle, rate). */
void blobs_http_options(struct ferry_http_options *ret);

/*
 * Azure SharedKey signing, exposed for the signer's unit test: the string
 * to sign for a request (method, full URL, its headers including x-ms-date,
 * body length), and the Authorization header value over it.
 */
int azure_string_to_sign(const char *account, const char *method, const char *url,
			 const struct ferry_http_header *headers, size_t nheaders,
			 uint64_t content_length, char **ret);
int azure_authorization(const char *account, const void *key, size_t keylen, const char *method,
			const char *url, const struct ferry_http_header *headers, size_t nheaders,
			uint64_t content_length, char **ret);
/* One List Blobs response page (xml, len bytes, not NUL-terminated): adds
 * every blob whose name starts with prefix, relative to it, to out, and sets
 * the next marker ("" at the end). -EBADMSG on malformed XML or a malformed
 * listing, and then adds nothing. Exposed for the fuzz target. */
int azure_list_parse(const char *prefix, const char *xml, size_t len, struct blob_list *out,
		     char **ret_marker);
/* Test hooks for the Azure backend: a small List Blobs page size, and a
 * fault seam under its HTTP client (see ferry_http_options.fault). */
void blobs_azure_set_max_results(struct ferry_blobs *b, unsigned n);
int blobs_azure_set_http_fault(struct ferry_blobs *b,
			       int (*fault)(const char *method, const char *url, void *ud),
			       void *ud);

extern const struct blobs_ops blobs_local_ops;
extern const struct blobs_ops blobs_azure_ops;
extern const struct blobs_ops blobs_s3_ops;
