/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * AWS Signature Version 4 for S3 requests: canonical request (method,
 * URI-encoded path, sorted query, lower-cased trimmed sorted headers, signed
 * header list, payload hash), string to sign over the date/region/service
 * scope, the HMAC key chain from the secret, and the Authorization header.
 * Pure: the caller supplies the time and sends the resulting headers.
 */
#include "sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/crypto.h"
#include "ferry/util.h"

static int unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

int sigv4_uri_encode(const char *s, int keep_slash, char **ret)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s);
	char *o = malloc(len * 3 + 1);
	if (!o)
		return -ENOMEM;
	char *p = o;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (unreserved(*c) || (keep_slash && *c == '/')) {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	*p = 0;
	*ret = o;
	return 0;
}

static void hex32(const uint8_t in[32], char out[65])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[64] = 0;
}

static void sha256_hex(const char *s, size_t len, char out[65])
{
	struct ferry_id id;
	ferry_sha256(s, len, &id);
	hex32(id.b, out);
}

struct kv {
	char *name; /* lower-cased (headers) or encoded (query) */
	char *value;
};

static void kv_free_all(struct kv *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].name);
		free(v[i].value);
	}
	free(v);
}

struct kv_array {
	struct kv *v;
	size_t n;
};

static void kv_array_done(struct kv_array *a)
{
	kv_free_all(a->v, a->n);
	a->v = NULL;
	a->n = 0;
}

static int kv_cmp(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/* Header values: leading/trailing blanks dropped, inner runs of blanks made one space. */
static char *trim_value(const char *s)
{
	char *o = malloc(strlen(s) + 1);
	if (!o)
		return NULL;
	char *p = o;
	int space = 0;
	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s; s++) {
		if (*s == ' ' || *s == '\t') {
			space = 1;
			continue;
		}
		if (space && p != o)
			*p++ = ' ';
		space = 0;
		*p++ = *s;
	}
	*p = 0;
	return o;
}

static int header_name_ok(const char *n)
{
	if (!*n)
		return 0;
	for (; *n; n++)
		if (*n <= ' ' || *n == ':' || (unsigned char)*n >= 0x7f)
			return 0;
	return 1;
}

static int value_ok(const char *v)
{
	/* A CR or LF would let a value forge further canonical lines and headers. */
	return !strpbrk(v, "\r\n");
}

static int add_header(struct kv_array *a, const char *name, const char *value)
{
	if (!header_name_ok(name) || !value_ok(value))
		return -EINVAL;
	char *n = strdup(name), *v = trim_value(value);
	if (!n || !v) {
		free(n);
		free(v);
		return -ENOMEM;
	}
	for (char *p = n; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	a->v[a->n++] = (struct kv){ n, v };
	return 0;
}

static int reserved_header(const char *n)
{
	return !strcasecmp(n, "host") || !strcasecmp(n, "x-amz-date") ||
	       !strcasecmp(n, "x-amz-content-sha256") || !strcasecmp(n, "x-amz-security-token") ||
	       !strcasecmp(n, "authorization");
}

static int build_headers(const struct sigv4_request *req, const struct sigv4_credentials *cred,
			 struct kv_array *a)
{
	int token = cred->session_token && *cred->session_token;
	a->v = calloc(req->nheaders + 4, sizeof(*a->v));
	if (!a->v)
		return -ENOMEM;
	int r = add_header(a, "host", req->host);
	if (r < 0)
		return r;
	for (size_t i = 0; i < req->nheaders; i++) {
		if (!req->headers[i].name || !req->headers[i].value ||
		    reserved_header(req->headers[i].name))
			return -EINVAL;
		r = add_header(a, req->headers[i].name, req->headers[i].value);
		if (r < 0)
			return r;
	}
	r = add_header(a, "x-amz-content-sha256", req->payload_hash);
	if (r < 0)
		return r;
	if (token) {
		r = add_header(a, "x-amz-security-token", cred->session_token);
		if (r < 0)
			return r;
	}
	/* x-amz-date goes in by the caller once formatted: see sigv4_sign(). */
	return 0;
}

static int build_query(const struct sigv4_request *req, struct kv_array *a)
{
	a->v = calloc(req->nquery + 1, sizeof(*a->v));
	if (!a->v)
		return -ENOMEM;
	for (size_t i = 0; i < req->nquery; i++) {
		const char *n = req->query[i].name, *v = req->query[i].value;
		if (!n)
			return -EINVAL;
		char *en = NULL, *ev = NULL;
		int r = sigv4_uri_encode(n, req->query_keep_slash, &en);
		if (r >= 0)
			r = sigv4_uri_encode(v ? v : "", req->query_keep_slash, &ev);
		if (r < 0) {
			free(en);
			return r;
		}
		a->v[a->n++] = (struct kv){ en, ev };
	}
	qsort(a->v, a->n, sizeof(*a->v), kv_cmp);
	return 0;
}

static int payload_hash_ok(const char *h)
{
	if (!strcmp(h, SIGV4_UNSIGNED_PAYLOAD))
		return 1;
	if (strlen(h) != 64)
		return 0;
	for (; *h; h++)
		if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f')))
			return 0;
	return 1;
}

static int scope_part_ok(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return 0;
	return 1;
}

static void hmac_str(const uint8_t *key, size_t keylen, const char *s, uint8_t out[32])
{
	ferry_hmac_sha256(key, keylen, s, strlen(s), out);
}

int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
	       struct sigv4_signed *out)
{
	if (!req || !cred || !req->method || !*req->method || !req->host || !*req->host ||
	    !req->payload_hash || !payload_hash_ok(req->payload_hash) ||
	    !scope_part_ok(req->region) || !scope_part_ok(req->service) || !cred->access_key_id ||
	    !*cred->access_key_id || !value_ok(cred->access_key_id) ||
	    strchr(cred->access_key_id, ',') || !cred->secret_access_key)
		return -EINVAL;

	struct tm tm;
	if (!gmtime_r(&req->now, &tm))
		return -EINVAL;
	char amz_date[17], date[9];
	if (strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm) != 16)
		return -EINVAL;
	memcpy(date, amz_date, 8);
	date[8] = 0;

	_cleanup_(kv_array_done) struct kv_array headers = { 0 };
	_cleanup_(kv_array_done) struct kv_array query = { 0 };
	int r = build_headers(req, cred, &headers);
	if (r < 0)
		return r;
	r = add_header(&headers, "x-amz-date", amz_date);
	if (r < 0)
		return r;
	r = build_query(req, &query);
	if (r < 0)
		return r;

	/* Same-named headers fold into one line, values joined by commas. */
	qsort(headers.v, headers.n, sizeof(*headers.v), kv_cmp);

	_cleanup_free_ char *uri = NULL;
	const char *path = req->path && *req->path ? req->path : "/";
	if (path[0] != '/' || !value_ok(path))
		return -EINVAL;
	r = sigv4_uri_encode(path, 1, &uri);
	if (r < 0)
		return r;

	/* The canonical request and the signed-header list. */
	_cleanup_free_ char *creq = NULL, *signed_headers = NULL;
	size_t creq_len = 0, sh_len = 0;
	{
		_cleanup_(fclosep) FILE *f = open_memstream(&creq, &creq_len);
		_cleanup_(fclosep) FILE *sh = open_memstream(&signed_headers, &sh_len);
		if (!f || !sh)
			return -ENOMEM;
		fprintf(f, "%s\n%s\n", req->method, uri);
		for (size_t i = 0; i < query.n; i++)
			fprintf(f, "%s%s=%s", i ? "&" : "", query.v[i].name, query.v[i].value);
		fputc('\n', f);
		for (size_t i = 0; i < headers.n; i++) {
			int first = i == 0 || strcmp(headers.v[i - 1].name, headers.v[i].name);
			int last = i + 1 == headers.n ||
				   strcmp(headers.v[i + 1].name, headers.v[i].name);
			if (first) {
				fprintf(f, "%s:", headers.v[i].name);
				fprintf(sh, "%s%s", i ? ";" : "", headers.v[i].name);
			} else {
				fputc(',', f);
			}
			fputs(headers.v[i].value, f);
			if (last)
				fputc('\n', f);
		}
		fputc('\n', f);
		fflush(sh);
		fprintf(f, "%s\n%s", signed_headers, req->payload_hash);
		if (ferror(f) || ferror(sh))
			return -ENOMEM;
	}

	char creq_hash[65];
	sha256_hex(creq, creq_len, creq_hash);

	_cleanup_free_ char *sts = NULL;
	if (asprintf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date,
		     req->region, req->service, creq_hash) < 0)
		return -ENOMEM;

	/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
	 *                 "aws4_request") */
	_cleanup_free_ char *k0 = NULL;
	if (asprintf(&k0, "AWS4%s", cred->secret_access_key) < 0)
		return -ENOMEM;
	uint8_t k[32], sig[32];
	hmac_str((const uint8_t *)k0, strlen(k0), date, k);
	explicit_bzero(k0, strlen(k0));
	hmac_str(k, sizeof(k), req->region, k);
	hmac_str(k, sizeof(k), req->service, k);
	hmac_str(k, sizeof(k), "aws4_request", k);
	hmac_str(k, sizeof(k), sts, sig);
	explicit_bzero(k, sizeof(k));

	char sig_hex[65];
	hex32(sig, sig_hex);
	char *auth = NULL;
	if (asprintf(&auth,
		     "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request,"
		     "SignedHeaders=%s,Signature=%s",
		     cred->access_key_id, date, req->region, req->service, signed_headers,
		     sig_hex) < 0)
		return -ENOMEM;

	*out = (struct sigv4_signed){ 0 };
	memcpy(out->amz_date, amz_date, sizeof(amz_date));
	memcpy(out->signature, sig_hex, sizeof(sig_hex));
	out->authorization = auth;
	out->canonical_request = TAKE_PTR(creq);
	out->string_to_sign = TAKE_PTR(sts);
	return 0;
}

void sigv4_signed_done(struct sigv4_signed *s)
{
	if (!s)
		return;
	free(s->authorization);
	free(s->canonical_request);
	free(s->string_to_sign);
	*s = (struct sigv4_signed){ 0 };
}
