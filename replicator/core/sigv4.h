/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * AWS Signature Version 4, our own (see machine-notes on curl's built-in
 * signer): a pure function from a request's method, host, path, query,
 * headers, payload hash, time and credentials to the headers that make S3
 * accept it. It never reads the clock, the environment or the network, so it
 * is unit-tested against AWS's published vectors. Internal to the core.
 */
#pragma once

#include <stddef.h>
#include <time.h>

/* Hex SHA-256 of the empty string: the payload hash of GET, HEAD, DELETE. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_credentials {
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token; /* NULL or "" without temporary credentials */
};

/* Name and value as sent, unencoded: the signer encodes them itself. */
struct sigv4_param {
	const char *name;
	const char *value;
};

struct sigv4_header {
	const char *name;
	const char *value;
};

struct sigv4_request {
	const char *method;
	const char *host; /* the Host header exactly as sent, with ":port" if any */
	const char *path; /* unencoded, starting with '/'; NULL or "" means "/" */
	const struct sigv4_param *query;
	size_t nquery;
	/* Further headers to sign (and send): range, if-none-match, ... Host,
	 * x-amz-date, x-amz-content-sha256 and x-amz-security-token are added
	 * by the signer and must not appear here. */
	const struct sigv4_header *headers;
	size_t nheaders;
	const char *payload_hash; /* lower-case hex SHA-256, or UNSIGNED-PAYLOAD */
	const char *region;       /* e.g. us-east-1 */
	const char *service;      /* "s3" */
	time_t now;               /* seconds since the epoch (UTC) */
	/* Compatibility, never for AWS: leave '/' unescaped in the canonical
	 * query, for servers that decode %2F before they check (moto). */
	int query_keep_slash;
};

struct sigv4_signed {
	char amz_date[17];   /* the x-amz-date value, YYYYMMDDTHHMMSSZ */
	char signature[65];  /* lower-case hex */
	char *authorization; /* the Authorization header's value */
	/* For tests and debugging; never hold the secret. */
	char *canonical_request;
	char *string_to_sign;
};

/* Fills out (only on success); -EINVAL on a malformed request. */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
	       struct sigv4_signed *out);
void sigv4_signed_done(struct sigv4_signed *s);

/*
 * AWS's UriEncode: every byte but A-Z a-z 0-9 - . _ ~ becomes %XX (upper-case
 * hex); with keep_slash, '/' stays (object paths), else it is %2F (query).
 * URLs built with this are exactly what the signature covers.
 */
int sigv4_uri_encode(const char *s, int keep_slash, char **ret);
