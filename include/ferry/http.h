/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HTTP for the object-store backends: the only module that uses libcurl.
 * A client keeps a pool of connections (reused across requests and safe to
 * share between threads), verifies TLS by default, and classifies failures
 * into -errno once: 404 -> -ENOENT, 409/412 -> -EEXIST, 401/403 -> -EACCES,
 * 416 -> -ERANGE, 429/500/502/503/504, resets and timeouts -> -EAGAIN or
 * -ETIMEDOUT (retryable), other 4xx -> -EPROTO.
 *
 * The core never sleeps on its own: retries happen only when the program
 * hands in a sleep function and a retry budget (ferry_http_options).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct ferry_http;

/* The most a response body may hold when the request sets no body_max: a
 * listing page (5000 names at most) fits many times over. A server that
 * sends more gets -EFBIG, before more than this is allocated. */
#define FERRY_HTTP_BODY_MAX (32u * 1024u * 1024u)

struct ferry_http_options {
	const char *ca_bundle;      /* PEM file for private endpoints; NULL = system store */
	unsigned connect_timeout_s; /* 0 = 10 */
	unsigned timeout_s;         /* whole request; 0 = 300 */
	unsigned max_retries;       /* retryable failures are retried this often (needs sleep) */
	uint64_t backoff_base_ns;   /* first delay; doubles per attempt, full jitter; 0 = 100 ms */
	uint64_t backoff_max_ns;    /* cap; 0 = 20 s */
	void (*sleep)(uint64_t ns); /* the program's sleep; NULL = never retry */
	uint64_t max_rate;          /* bytes/s cap on uploads, 0 = none (agent --max-rate) */
	/* Test seam: called before each attempt with the method and URL; a
	 * negative errno fails the attempt as if the network had. */
	int (*fault)(const char *method, const char *url, void *userdata);
	void *fault_userdata;
};

struct ferry_http_header {
	const char *name;
	const char *value;
};

struct ferry_http_request {
	const char *method; /* GET, PUT, HEAD, DELETE, POST */
	const char *url;
	const void *body;
	size_t body_len;
	/* Called before every attempt (also retries) to add headers that
	 * depend on the moment, such as a signature over x-ms-date; fills up to
	 * max headers into out (strings stay valid until the next call) and
	 * returns how many, or -errno. */
	int (*sign)(void *userdata, const struct ferry_http_request *req,
		    struct ferry_http_header *out, size_t max);
	void *sign_userdata;
	const struct ferry_http_header *headers; /* fixed headers */
	size_t nheaders;
	/* Where a GET's body goes: a caller buffer of this capacity (ranged
	 * reads), or NULL to get a new allocation in the response. */
	void *into;
	size_t into_cap;
	/* Without into: the most bytes a successful response's body may hold
	 * (0 = FERRY_HTTP_BODY_MAX). A larger Content-Length, or more bytes
	 * than that, fails the request with -EFBIG before the body is
	 * allocated. Error bodies are cut short instead (they are for
	 * messages only). */
	size_t body_max;
};

struct ferry_http_response {
	long status;
	void *body; /* when req->into is NULL: malloc'd, NUL-terminated; caller frees */
	size_t body_len;
	/* Selected response headers, "" when absent. */
	char etag[128];
	char content_range[96];
	char lease_id[64];
	char request_id[96];
	uint64_t content_length;
	/* How many attempts ferry_http_do made (1 = no retry): lets a caller
	 * tell "409 because our own lost-answer put already landed". */
	unsigned attempts;
};

int ferry_http_new(const struct ferry_http_options *opts, struct ferry_http **ret);
struct ferry_http *ferry_http_free(struct ferry_http *h);

/*
 * Performs req, retrying retryable failures within the budget. Returns 0
 * for any 2xx (resp filled), the classified -errno otherwise (resp still
 * filled with the last status and body, for error messages).
 */
int ferry_http_do(struct ferry_http *h, const struct ferry_http_request *req,
		  struct ferry_http_response *resp);
void ferry_http_response_clear(struct ferry_http_response *resp);

/* RFC 3986 percent-encoding of s; with keep_slash, '/' stays as is. */
int ferry_http_escape(const char *s, int keep_slash, char **ret);
