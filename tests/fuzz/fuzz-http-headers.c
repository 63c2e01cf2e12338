/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the HTTP response header parser (http.c): the headers
 * come from the server, which may be hostile. The input is cut into lines
 * after each '\n', as libcurl hands them over, and each line is fed in its
 * own exact-size buffer. After every line the selected headers must be
 * NUL-terminated within their fields, and Content-Length must be what the
 * last such header said when it was a plain decimal of at most 19 digits;
 * a GET whose body is allocated refuses exactly the lengths over its
 * body_max (and the default bound without one), a HEAD or a ranged read
 * never.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ferry/util.h"
#include "http-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct ferry_http_response *r)
{
	if (strnlen(r->etag, sizeof(r->etag)) == sizeof(r->etag) ||
	    strnlen(r->content_range, sizeof(r->content_range)) == sizeof(r->content_range) ||
	    strnlen(r->lease_id, sizeof(r->lease_id)) == sizeof(r->lease_id) ||
	    strnlen(r->request_id, sizeof(r->request_id)) == sizeof(r->request_id))
		abort();
}

/* What Content-Length the line sets, independently of the parser: -1 when
 * it is not a Content-Length line, 0 when its value is unusable. */
static int64_t expected_length(const char *line, size_t n, uint64_t *ret)
{
	static const char key[] = "content-length:";
	if (n < sizeof(key) - 1 || strncasecmp(line, key, sizeof(key) - 1) != 0)
		return -1;
	size_t a = sizeof(key) - 1, b = n;
	while (a < b && (line[a] == ' ' || line[a] == '\t'))
		a++;
	while (b > a && strchr("\r\n \t", line[b - 1]) && line[b - 1])
		b--;
	uint64_t v = 0;
	if (b == a || b - a > 19) {
		*ret = 0;
		return 0;
	}
	for (size_t i = a; i < b; i++) {
		if (!isdigit((unsigned char)line[i])) {
			*ret = 0;
			return 0;
		}
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	*ret = v;
	return 0;
}

/* The body bound over whatever length the headers announced. */
static void check_bound(const struct ferry_http_response *r)
{
	char buf[8];
	struct ferry_http_request get = { .method = "GET", .url = "x", .body_max = 4096 };
	struct ferry_http_request dflt = { .method = "GET", .url = "x" };
	struct ferry_http_request head = { .method = "HEAD", .url = "x", .body_max = 1 };
	struct ferry_http_request into = { .method = "GET", .url = "x", .into = buf, .into_cap = 1 };
	if (http_body_refused(&get, 200, r) != (r->content_length > 4096) ||
	    http_body_refused(&get, 206, r) != (r->content_length > 4096) ||
	    http_body_refused(&dflt, 200, r) != (r->content_length > FERRY_HTTP_BODY_MAX) ||
	    http_body_refused(&get, 404, r) || http_body_refused(&head, 200, r) ||
	    http_body_refused(&into, 200, r))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferry_http_response r = { 0 };
	for (size_t off = 0; off < size;) {
		const uint8_t *nl = memchr(data + off, '\n', size - off);
		size_t n = nl ? (size_t)(nl - (data + off)) + 1 : size - off;
		_cleanup_free_ char *line = malloc(n);
		if (!line)
			return 0;
		memcpy(line, data + off, n);
		http_header_line(&r, line, n);
		check(&r);
		uint64_t want;
		if (expected_length(line, n, &want) == 0 && r.content_length != want)
			abort();
		check_bound(&r);
		off += n;
	}
	return 0;
}
