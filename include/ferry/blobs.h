/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A flat namespace of immutable-ish named blobs: the seam under both the
 * cache and the store. A location is a URL: a plain path or file://PATH
 * today; azblob:// and s3:// backends plug in behind the same operations.
 *
 * Names are relative, '/'-separated, made of [A-Za-z0-9._-] components.
 * Every put is atomic: a reader sees the whole blob or nothing.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct ferry_blobs;

/* Open (and with create, make) the location. -EINVAL on a malformed URL,
 * -ENOENT where it does not exist and create is 0, -EPROTONOSUPPORT for a
 * scheme this build does not speak, -ENOPROTOOPT for an object store reached
 * over plain http:// (see insecure_http below). A local directory is made
 * and kept private: FERRY_DIR_MODE, its blobs FERRY_FILE_MODE. */
int ferry_blobs_open(const char *url, int create, struct ferry_blobs **ret);
struct ferry_blobs *ferry_blobs_free(struct ferry_blobs *b);

/* The URL this was opened with, safe to print (never holds a secret). */
const char *ferry_blobs_url(const struct ferry_blobs *b);

/* Durable once it returns. With exclusive set, -EEXIST if name exists
 * (a conditional create); otherwise an existing blob is replaced whole. */
int ferry_blobs_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		    int exclusive);
/* Reads len bytes at off into buf; -ENOENT if missing, -EBADMSG if the blob
 * is shorter than off+len. */
int ferry_blobs_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			  size_t len);
/* Reads a whole blob into a new buffer. */
int ferry_blobs_get(struct ferry_blobs *b, const char *name, void **ret_buf, size_t *ret_len);
/* The same for a blob the caller knows to be at most max bytes (a segment,
 * an ack): -EFBIG for a larger one, before anything is allocated for it or
 * read from it. */
int ferry_blobs_get_max(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
			size_t *ret_len);
int ferry_blobs_size(struct ferry_blobs *b, const char *name, uint64_t *ret);
/* Missing names are not an error: delete is idempotent. */
int ferry_blobs_delete(struct ferry_blobs *b, const char *name);
/* The most blobs one listing takes in, ours or not: a location holding
 * more under the prefix fails the listing with -E2BIG rather than take the
 * memory. (4 Mi packs of 32 MiB are 128 TiB of store.) */
#define FERRY_BLOBS_LIST_MAX (4u * 1024u * 1024u)

/* Calls cb for every blob whose name starts with prefix, in byte order of
 * names. A negative return from cb stops the walk and is returned. */
int ferry_blobs_list(struct ferry_blobs *b, const char *prefix,
		     int (*cb)(const char *name, uint64_t size, void *userdata), void *userdata);
/* For a local location, the directory it lives in; NULL otherwise. Lets
 * the store read packs with pread instead of a copy. */
const char *ferry_blobs_local_dir(const struct ferry_blobs *b);

/*
 * Fault-injection seam (tests only, as SQLite's test VFS): with fault set,
 * every operation first calls fault(op, name, ud), op being "put",
 * "get_range", "get", "size", "delete" or "list" (name is the prefix for
 * list). A negative errno from it fails the operation with that error before
 * it has any side effect; "crash after N operations" is a callback that
 * starts returning -EIO. While a fault callback is set, ferry_blobs_local_dir()
 * returns NULL so that callers' fast paths go through the seam too. Pass
 * NULL to remove it.
 */
void ferry_blobs_set_fault(struct ferry_blobs *b,
			   int (*fault)(const char *op, const char *name, void *ud), void *ud);

/*
 * Credentials and network policy for object-store locations. The programs
 * fill this from their environment and flags (the core reads neither) and
 * set it once, before opening anything remote. Strings are copied.
 */
struct ferry_blobs_options {
	/* Azure: a connection string (AccountName/AccountKey/BlobEndpoint/
	 * SharedAccessSignature/UseDevelopmentStorage=true), or account with
	 * key or SAS token. */
	const char *azure_connection_string;
	const char *azure_account;
	const char *azure_key;
	const char *azure_sas;
	/* S3 */
	const char *aws_access_key_id;
	const char *aws_secret_access_key;
	const char *aws_session_token;
	const char *aws_region;       /* default us-east-1 */
	const char *aws_endpoint_url; /* e.g. http://127.0.0.1:5000; NULL = AWS */
	int s3_path_style;            /* 1 = path-style addressing, forced for endpoint URLs */
	/* Plain http:// endpoints other than loopback (127.0.0.0/8, ::1,
	 * localhost) are refused with -ENOPROTOOPT unless this is set:
	 * credentials and data would travel in the clear. */
	int insecure_http;
	/* HTTP policy (see http.h) */
	const char *ca_bundle;
	unsigned max_retries;
	void (*sleep)(uint64_t ns);
	uint64_t max_rate;
	unsigned parallel; /* concurrent requests a backend may use; 0 = 4 */
};
int ferry_blobs_set_options(const struct ferry_blobs_options *opts);

/*
 * Fills ret the way the Azure and AWS tools read their environment, through
 * lookup (the program passes getenv; the core reads no environment):
 * AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with
 * AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN; AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or
 * AWS_DEFAULT_REGION), AWS_ENDPOINT_URL; FERRY_CA_BUNDLE; FERRY_INSECURE_HTTP
 * (any value but 0 sets insecure_http). Empty values count as unset. The strings point wherever lookup's results point. A default
 * retry budget is filled in, but sleep stays NULL (no retries) until the
 * program supplies its own: sleeping is policy. Returns 0.
 */
int ferry_blobs_options_from(const char *(*lookup)(const char *name),
			     struct ferry_blobs_options *ret);

/*
 * An exclusive lock on a location, for "one replicator per store": an
 * Azure blob lease, an S3 conditional-create lock object, a flock locally.
 * -EBUSY while another holder's lock is live. ttl_s bounds how long a
 * crashed holder blocks others; renew before it runs out.
 */
struct ferry_blobs_lock;
int ferry_blobs_lock_acquire(struct ferry_blobs *b, const char *name, unsigned ttl_s,
			     struct ferry_blobs_lock **ret);
int ferry_blobs_lock_renew(struct ferry_blobs_lock *l);
/* Releases and frees; NULL is fine. */
struct ferry_blobs_lock *ferry_blobs_lock_release(struct ferry_blobs_lock *l);
