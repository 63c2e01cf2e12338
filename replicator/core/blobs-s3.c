/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The S3 blobs backend: s3://BUCKET[/PREFIX] over the S3 REST API with our
 * own SigV4 signer (sigv4.c) and the shared HTTP client (http.c). Blob NAME
 * is object PREFIX/NAME. Puts are single PutObject requests (packs stay far
 * below S3's 5 GiB single-PUT limit), exclusive ones conditional with
 * If-None-Match: *; reads are ranged GETs; listings walk ListObjectsV2 pages,
 * read (like error bodies) with libxml2, locked down by blobs-xml.h.
 * The lock is a small object created conditionally (see the lock section).
 * Addressing is virtual-host (BUCKET.s3.REGION.amazonaws.com) by default,
 * path-style when asked, for dotted bucket names, and for endpoint URLs.
 */
#include "blobs-s3.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "blobs-xml.h"
#include "ferry/crypto.h"
#include "ferry/http.h"
#include "ferry/util.h"
#include "sigv4.h"

#define LOCK_MAGIC "ferry-s3-lock 1\n"
#define LOCK_MAX_SIZE 4096

struct s3 {
	struct ferry_http *http;
	char *bucket;
	char *prefix;    /* "" or "PREFIX/" */
	char *origin;    /* "https://host[:port]", no trailing slash */
	char *host;      /* the Host header, as in origin */
	char *base_path; /* raw path before the key: "/bucket" or "" (+ endpoint path) */
	char *region;
	char *key_id; /* NULL: anonymous, unsigned requests */
	char *secret;
	char *token;
	unsigned max_keys; /* test hook; 0 = server default */
	int slash_quirk;   /* the server wants '/' raw in the signed query (atomic) */
};

static void s3_free(struct s3 *s)
{
	if (!s)
		return;
	ferry_http_free(s->http);
	free(s->bucket);
	free(s->prefix);
	free(s->origin);
	free(s->host);
	free(s->base_path);
	free(s->region);
	free(s->key_id);
	if (s->secret)
		explicit_bzero(s->secret, strlen(s->secret));
	free(s->secret);
	if (s->token)
		explicit_bzero(s->token, strlen(s->token));
	free(s->token);
	free(s);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct s3 *, s3_free)

static void response_clearp(struct ferry_http_response *r)
{
	ferry_http_response_clear(r);
}
#define _cleanup_response_ _cleanup_(response_clearp)

/* --- requests --- */

struct sign_ctx {
	const struct s3 *s;
	struct sigv4_request req;
	char payload_hash[65];
	struct sigv4_signed sig;
};

static int sign_cb(void *userdata, const struct ferry_http_request *hreq,
		   struct ferry_http_header *out, size_t max)
{
	struct sign_ctx *c = userdata;
	const struct s3 *s = c->s;
	(void)hreq; /* everything signed was fixed when the context was built */
	if (max < 5)
		return -EINVAL;
	size_t n = 0;
	out[n++] = (struct ferry_http_header){ "Host", s->host };
	if (!s->key_id)
		return (int)n;

	/* Fresh for every attempt: S3 refuses a signature older than 15 minutes. */
	sigv4_signed_done(&c->sig);
	c->req.now = (time_t)(ferry_now_ns() / 1000000000);
	struct sigv4_credentials cred = {
		.access_key_id = s->key_id,
		.secret_access_key = s->secret,
		.session_token = s->token,
	};
	int r = sigv4_sign(&c->req, &cred, &c->sig);
	if (r < 0)
		return r;
	out[n++] = (struct ferry_http_header){ "x-amz-date", c->sig.amz_date };
	out[n++] = (struct ferry_http_header){ "x-amz-content-sha256", c->payload_hash };
	if (s->token && *s->token)
		out[n++] = (struct ferry_http_header){ "x-amz-security-token", s->token };
	out[n++] = (struct ferry_http_header){ "Authorization", c->sig.authorization };
	return (int)n;
}

struct s3_req {
	const char *method;
	const char *key; /* full object key (prefix included); NULL for the bucket itself */
	const struct sigv4_param *query;
	size_t nquery;
	const struct sigv4_header *headers; /* sent and signed */
	size_t nheaders;
	const void *body;
	size_t body_len;
	void *into;
	size_t into_cap;
	size_t body_max; /* see ferry_http_request */
};

static int build_url(const struct s3 *s, const struct s3_req *r, int keep_slash, char **ret_url,
		     char **ret_path)
{
	_cleanup_free_ char *path = NULL, *epath = NULL;
	if (asprintf(&path, "%s/%s", s->base_path, r->key ? r->key : "") < 0)
		return -ENOMEM;
	int k = sigv4_uri_encode(path, 1, &epath);
	if (k < 0)
		return k;

	char *url = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&url, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "%s%s", s->origin, epath);
	for (size_t i = 0; i < r->nquery; i++) {
		_cleanup_free_ char *en = NULL, *ev = NULL;
		k = sigv4_uri_encode(r->query[i].name, keep_slash, &en);
		if (k >= 0)
			k = sigv4_uri_encode(r->query[i].value ? r->query[i].value : "", keep_slash,
					     &ev);
		if (k < 0) {
			fclose(f);
			free(url);
			return k;
		}
		fprintf(f, "%c%s=%s", i ? '&' : '?', en, ev);
	}
	if (fclose(f) != 0) {
		free(url);
		return -ENOMEM;
	}
	*ret_url = url;
	*ret_path = TAKE_PTR(path);
	return 0;
}

/* The S3 error code of an error response body (<Error><Code>), or "". */
static void error_code(const struct ferry_http_response *resp, char *buf, size_t size)
{
	buf[0] = 0;
	_cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
	if (blobs_xml_parse(resp->body, resp->body_len, &doc) < 0)
		return;
	xmlNode *err = xmlDocGetRootElement(doc);
	/* S3 answers <Error>; some compatible services wrap it in <ErrorResponse>. */
	if (!blobs_xml_is(err, "Error") && blobs_xml_child(err, "Error", &err) < 0)
		return;
	_cleanup_free_ char *code = NULL;
	if (blobs_xml_child_text(err, "Code", &code) < 0 || strlen(code) >= size)
		return;
	strcpy(buf, code);
}

static int s3_do_once(struct s3 *s, const struct s3_req *r, int keep_slash,
		      struct ferry_http_response *resp)
{
	_cleanup_free_ char *url = NULL, *path = NULL;
	int k = build_url(s, r, keep_slash, &url, &path);
	if (k < 0)
		return k;

	struct sign_ctx ctx = {
		.s = s,
		.req = {
			.method = r->method,
			.host = s->host,
			.path = path,
			.query = r->query,
			.nquery = r->nquery,
			.headers = r->headers,
			.nheaders = r->nheaders,
			.payload_hash = ctx.payload_hash,
			.region = s->region,
			.service = "s3",
			.query_keep_slash = keep_slash,
		},
	};
	if (r->body_len) {
		struct ferry_id id;
		ferry_sha256(r->body, r->body_len, &id);
		ferry_id_to_hex(&id, ctx.payload_hash);
	} else {
		memcpy(ctx.payload_hash, SIGV4_EMPTY_SHA256, sizeof(ctx.payload_hash));
	}

	struct ferry_http_header fixed[8];
	if (r->nheaders > ARRAY_SIZE(fixed))
		return -EINVAL;
	for (size_t i = 0; i < r->nheaders; i++)
		fixed[i] = (struct ferry_http_header){ r->headers[i].name, r->headers[i].value };

	struct ferry_http_request hreq = {
		.method = r->method,
		.url = url,
		.body = r->body,
		.body_len = r->body_len,
		.sign = sign_cb,
		.sign_userdata = &ctx,
		.headers = fixed,
		.nheaders = r->nheaders,
		.into = r->into,
		.into_cap = r->into_cap,
		.body_max = r->body_max,
	};
	k = ferry_http_do(s->http, &hreq, resp);
	sigv4_signed_done(&ctx.sig);
	return k;
}

static int query_has_slash(const struct s3_req *r)
{
	for (size_t i = 0; i < r->nquery; i++)
		if (strchr(r->query[i].name, '/') ||
		    (r->query[i].value && strchr(r->query[i].value, '/')))
			return 1;
	return 0;
}

/*
 * moto decodes %2F in the query before it computes the signature it
 * expects (see machine-notes), so a listing with '/' in its prefix fails
 * there when signed the AWS way. Such a request is signed once more with
 * '/' left raw in the query (URL and canonical form alike), and the client
 * keeps doing that once it worked. AWS never takes this path: its first
 * answer is not SignatureDoesNotMatch.
 */
static int s3_do(struct s3 *s, const struct s3_req *r, struct ferry_http_response *resp)
{
	int slash = query_has_slash(r);
	int quirk = slash && __atomic_load_n(&s->slash_quirk, __ATOMIC_RELAXED);
	int k = s3_do_once(s, r, quirk, resp);
	if (k != -EACCES || !slash || quirk)
		return k;
	char code[64];
	error_code(resp, code, sizeof(code));
	if (strcmp(code, "SignatureDoesNotMatch") != 0)
		return k;
	ferry_http_response_clear(resp);
	k = s3_do_once(s, r, 1, resp);
	if (k != -EACCES)
		__atomic_store_n(&s->slash_quirk, 1, __ATOMIC_RELAXED);
	return k;
}

static int full_key(const struct s3 *s, const char *name, char **ret)
{
	return asprintf(ret, "%s%s", s->prefix, name) < 0 ? -ENOMEM : 0;
}

/* --- open --- */

static int bucket_name_ok(const char *b, size_t n)
{
	if (n < 3 || n > 255)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)b[i]) && b[i] != '.' && b[i] != '-' && b[i] != '_')
			return 0;
	return 1;
}

static int prefix_char_ok(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '/';
}

static int dup_opt(const char *v, char **ret)
{
	*ret = NULL;
	if (!v || !*v)
		return 0;
	*ret = strdup(v);
	return *ret ? 0 : -ENOMEM;
}

/*
 * Where requests go. An endpoint URL (moto, MinIO, a private S3) is taken
 * as scheme://authority[/path] and always path-style; AWS itself is
 * virtual-host unless path-style is asked for or the bucket name has dots
 * (which the *.s3 wildcard certificate does not cover).
 */
static int setup_endpoint(struct s3 *s, const struct ferry_blobs_options *o)
{
	const char *ep = o->aws_endpoint_url;
	if (ep && *ep) {
		const char *auth;
		if (!strncmp(ep, "http://", 7))
			auth = ep + 7;
		else if (!strncmp(ep, "https://", 8))
			auth = ep + 8;
		else
			return -EINVAL;
		size_t alen = strcspn(auth, "/?#");
		if (alen == 0 || memchr(auth, '@', alen))
			return -EINVAL;
		const char *path = auth + alen;
		if (*path == '?' || *path == '#')
			return -EINVAL;
		size_t plen = strlen(path);
		while (plen && path[plen - 1] == '/')
			plen--;
		for (size_t i = 0; i < plen; i++)
			if (!prefix_char_ok(path[i]))
				return -EINVAL;
		for (size_t i = 0; i < alen; i++)
			if (!isalnum((unsigned char)auth[i]) && !strchr(".-:[]", auth[i]))
				return -EINVAL;
		s->origin = strndup(ep, (size_t)(auth - ep) + alen);
		s->host = strndup(auth, alen);
		if (asprintf(&s->base_path, "%.*s/%s", (int)plen, path, s->bucket) < 0)
			s->base_path = NULL;
		return s->origin && s->host && s->base_path ? 0 : -ENOMEM;
	}

	if (o->s3_path_style || strchr(s->bucket, '.')) {
		if (asprintf(&s->host, "s3.%s.amazonaws.com", s->region) < 0) {
			s->host = NULL;
			return -ENOMEM;
		}
		if (asprintf(&s->base_path, "/%s", s->bucket) < 0) {
			s->base_path = NULL;
			return -ENOMEM;
		}
	} else {
		if (asprintf(&s->host, "%s.s3.%s.amazonaws.com", s->bucket, s->region) < 0) {
			s->host = NULL;
			return -ENOMEM;
		}
		s->base_path = strdup("");
		if (!s->base_path)
			return -ENOMEM;
	}
	if (asprintf(&s->origin, "https://%s", s->host) < 0) {
		s->origin = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int bucket_exists(struct s3 *s)
{
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	/* HeadBucket: 200, 404 (no bucket), 403 (bad key or not ours). */
	return s3_do(s, &(struct s3_req){ .method = "HEAD" }, &resp);
}

static int bucket_create(struct s3 *s)
{
	_cleanup_free_ char *body = NULL;
	/* us-east-1 is the one region that takes no location constraint. */
	if (strcmp(s->region, "us-east-1") != 0 &&
	    asprintf(&body,
		     "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		     "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>",
		     s->region) < 0)
		return -ENOMEM;
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	int r = s3_do(s,
		      &(struct s3_req){
			      .method = "PUT", .body = body, .body_len = body ? strlen(body) : 0 },
		      &resp);
	if (r == -EEXIST) {
		char code[64];
		error_code(&resp, code, sizeof(code));
		/* Someone else's bucket of that name is not ours to use. */
		if (strcmp(code, "BucketAlreadyOwnedByYou") != 0)
			return -EACCES;
		return 0;
	}
	return r;
}

static int s3_open(struct ferry_blobs *b, const char *where, int create)
{
	const struct ferry_blobs_options *o = blobs_options();
	_cleanup_(s3_freep) struct s3 *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;

	size_t blen = strcspn(where, "/");
	if (!bucket_name_ok(where, blen))
		return -EINVAL;
	s->bucket = strndup(where, blen);
	if (!s->bucket)
		return -ENOMEM;
	const char *p = where + blen;
	while (*p == '/')
		p++;
	size_t plen = strlen(p);
	while (plen && p[plen - 1] == '/')
		plen--;
	for (size_t i = 0; i < plen; i++)
		if (!prefix_char_ok(p[i]) || (p[i] == '/' && p[i + 1] == '/'))
			return -EINVAL;
	if (asprintf(&s->prefix, "%.*s%s", (int)plen, p, plen ? "/" : "") < 0) {
		s->prefix = NULL;
		return -ENOMEM;
	}

	int r = dup_opt(o->aws_region && *o->aws_region ? o->aws_region : "us-east-1", &s->region);
	if (r >= 0)
		r = dup_opt(o->aws_access_key_id, &s->key_id);
	if (r >= 0)
		r = dup_opt(o->aws_secret_access_key, &s->secret);
	if (r >= 0)
		r = dup_opt(o->aws_session_token, &s->token);
	if (r < 0)
		return r;
	for (const char *c = s->region; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '-')
			return -EINVAL;
	/* A key id without a secret would sign with an empty one: refuse instead. */
	if (!!s->key_id != !!s->secret)
		return -EINVAL;

	r = setup_endpoint(s, o);
	if (r >= 0)
		r = blobs_endpoint_allowed(s->origin, o->insecure_http);
	if (r < 0)
		return r;

	struct ferry_http_options ho;
	blobs_http_options(&ho);
	r = ferry_http_new(&ho, &s->http);
	if (r < 0)
		return r;

	r = bucket_exists(s);
	if (r == -ENOENT && create)
		r = bucket_create(s);
	if (r < 0)
		return r;
	b->priv = TAKE_PTR(s);
	return 0;
}

static void s3_close(struct ferry_blobs *b)
{
	s3_free(b->priv);
	b->priv = NULL;
}

void blobs_s3_set_max_keys(struct ferry_blobs *b, unsigned n)
{
	if (b->ops != &blobs_s3_ops)
		return;
	struct s3 *s = b->priv;
	s->max_keys = n;
}

/* --- objects --- */

static int put_object(struct s3 *s, const char *key, const void *buf, size_t len,
		      const struct sigv4_header *cond, char *ret_etag, size_t etag_size)
{
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	int r = s3_do(s,
		      &(struct s3_req){ .method = "PUT",
					.key = key,
					.headers = cond,
					.nheaders = cond ? 1 : 0,
					.body = buf,
					.body_len = len },
		      &resp);
	if (r < 0)
		return r;
	if (ret_etag)
		snprintf(ret_etag, etag_size, "%s", resp.etag);
	return 0;
}

static int s3_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		  int exclusive)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	/*
	 * A retried exclusive put whose first attempt landed comes back as
	 * -EEXIST, like a genuine conflict: callers that write immutable,
	 * content-named objects treat -EEXIST as "already there". The lock
	 * below tells its own retries apart by the owner it wrote.
	 */
	static const struct sigv4_header inm = { "If-None-Match", "*" };
	return put_object(s, key, buf, len, exclusive ? &inm : NULL, NULL, 0);
}

static int s3_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			size_t len)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;

	if (len == 0) {
		/* An empty Range is not expressible; the size answers whether off fits. */
		_cleanup_response_ struct ferry_http_response resp = { 0 };
		r = s3_do(s, &(struct s3_req){ .method = "HEAD", .key = key }, &resp);
		if (r < 0)
			return r;
		return resp.content_length < off ? -EBADMSG : 0;
	}
	if (off > UINT64_MAX - len)
		return -EINVAL;

	char range[64];
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
	const struct sigv4_header h = { "Range", range };
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	r = s3_do(s,
		  &(struct s3_req){ .method = "GET",
				    .key = key,
				    .headers = &h,
				    .nheaders = 1,
				    .into = buf,
				    .into_cap = len },
		  &resp);
	if (r == -ERANGE) /* 416: off is at or past the end */
		return -EBADMSG;
	if (r < 0)
		return r;
	/* A short object gives a short 206; a server ignoring Range gives 200. */
	if (resp.body_len != len)
		return -EBADMSG;
	if (resp.status == 200 && off != 0)
		return -EBADMSG;
	return 0;
}

static int s3_get(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
		  size_t *ret_len)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	/* An empty blob still needs a body_max: 0 would mean the default. */
	r = s3_do(s,
		  &(struct s3_req){ .method = "GET", .key = key, .body_max = (size_t)MAX(max, 1) },
		  &resp);
	if (r >= 0 && resp.body_len > max)
		r = -EFBIG;
	if (r < 0)
		return r;
	void *body = resp.body;
	if (!body) {
		body = calloc(1, 1);
		if (!body)
			return -ENOMEM;
	}
	resp.body = NULL;
	*ret_len = resp.body_len;
	*ret_buf = body;
	return 0;
}

static int s3_size(struct ferry_blobs *b, const char *name, uint64_t *ret)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	r = s3_do(s, &(struct s3_req){ .method = "HEAD", .key = key }, &resp);
	if (r < 0)
		return r;
	*ret = resp.content_length;
	return 0;
}

static int delete_object(struct s3 *s, const char *key, const struct sigv4_header *cond)
{
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	return s3_do(
		s,
		&(struct s3_req){
			.method = "DELETE", .key = key, .headers = cond, .nheaders = cond ? 1 : 0 },
		&resp);
}

static int s3_del(struct ferry_blobs *b, const char *name)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	r = delete_object(s, key, NULL);
	return r == -ENOENT ? 0 : r;
}

/* --- listing: ListObjectsV2 pages --- */

/* One <Contents>: its <Key> and <Size>. */
static int add_object(const char *prefix, const xmlNode *contents, struct blob_list *out)
{
	_cleanup_free_ char *key = NULL, *size_text = NULL;
	int r = blobs_xml_child_text(contents, "Key", &key);
	if (r >= 0)
		r = blobs_xml_child_text(contents, "Size", &size_text);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	uint64_t size;
	if (ferry_parse_u64(size_text, strlen(size_text), UINT64_MAX, &size) < 0)
		return -EBADMSG;
	size_t plen = strlen(prefix);
	if (strlen(key) <= plen || strncmp(key, prefix, plen) != 0)
		return 0;
	char *name = strdup(key + plen);
	if (!name)
		return -ENOMEM;
	r = blob_list_add(out, name, size);
	if (r < 0)
		free(name);
	return r;
}

/*
 * One ListObjectsV2 page (<ListBucketResult>): every <Contents> with its
 * <Key> and <Size>, and <IsTruncated>/<NextContinuationToken>. Keys outside
 * the location's prefix cannot come back for our prefix query; a server
 * that sends them anyway is ignored rather than trusted with names outside
 * the location.
 */
int s3_list_parse(const char *prefix, const char *body, size_t body_len, struct blob_list *out,
		  char **ret_next)
{
	_cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
	int r = blobs_xml_parse(body, body_len, &doc);
	if (r < 0)
		return r;
	const xmlNode *root = xmlDocGetRootElement(doc);
	if (!blobs_xml_is(root, "ListBucketResult"))
		return -EBADMSG;

	_cleanup_free_ char *truncated = NULL, *next = NULL;
	r = blobs_xml_child_text(root, "IsTruncated", &truncated);
	if (r < 0 && r != -ENOENT)
		return r;
	if (truncated && strcmp(truncated, "true") == 0) {
		r = blobs_xml_child_text(root, "NextContinuationToken", &next);
		if (r < 0)
			return r == -ENOMEM ? r : -EBADMSG;
		if (!*next || strlen(next) > BLOBS_LIST_MARKER_MAX)
			return -EBADMSG;
	}

	size_t n0 = out->n;
	r = 0;
	for (const xmlNode *n = root->children; n && r >= 0; n = n->next)
		r = blobs_xml_is(n, "Contents") ? add_object(prefix, n, out) : 0;
	if (r < 0) {
		blob_list_truncate(out, n0);
		return r;
	}
	*ret_next = TAKE_PTR(next);
	return 0;
}

static int s3_list(struct ferry_blobs *b, const char *prefix, struct blob_list *out)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *full = NULL, *token = NULL;
	int r = full_key(s, prefix, &full);
	if (r < 0)
		return r;
	char max_keys[16];
	snprintf(max_keys, sizeof(max_keys), "%u", s->max_keys);

	for (unsigned page = 0;; page++) {
		if (page >= BLOBS_LIST_MAX_PAGES)
			return -E2BIG;
		struct sigv4_param q[4] = {
			{ "list-type", "2" },
			{ "prefix", full },
		};
		size_t nq = 2;
		if (token)
			q[nq++] = (struct sigv4_param){ "continuation-token", token };
		if (s->max_keys)
			q[nq++] = (struct sigv4_param){ "max-keys", max_keys };
		_cleanup_response_ struct ferry_http_response resp = { 0 };
		r = s3_do(s,
			  &(struct s3_req){ .method = "GET",
					    .query = q,
					    .nquery = nq,
					    .body_max = BLOBS_XML_MAX },
			  &resp);
		if (r < 0)
			return r;
		char *next = NULL;
		r = s3_list_parse(s->prefix, resp.body, resp.body_len, out, &next);
		if (r < 0)
			return r;
		if (!next)
			return 0;
		/* The same token twice would never end. */
		if (token && !strcmp(token, next)) {
			free(next);
			return -EBADMSG;
		}
		free(token);
		token = next;
	}
}

/* --- the lock --- */

/*
 * The lock is object NAME holding LOCK_MAGIC, "owner HEX" (a random nonce,
 * which is also the token) and "expires-ms MS" (Unix time in milliseconds:
 * whole seconds would cut a short TTL by up to one). S3's
 * conditional writes make every step a compare-and-swap on the object:
 *
 * - acquire creates it with If-None-Match: *, so of any number of
 *   contenders exactly one create succeeds.
 * - A live lock (expiry in the future) means -EBUSY. An expired one is
 *   deleted with If-Match on the ETag we read, then created again with
 *   If-None-Match. If the holder renewed in between, its ETag changed and
 *   the delete fails (412): the lock is live after all, -EBUSY. If another
 *   contender deleted it first, our delete finds nothing (404) or a new
 *   lock (412); either way we go on to the conditional create, which only
 *   one of us wins. So a lock is never taken from a holder that renewed it,
 *   and never held twice.
 * - renew rewrites it with If-Match on the ETag of the version that still
 *   names us as owner; release deletes it with If-Match the same way, so a
 *   holder that lost its lock never overwrites or deletes its successor's.
 *
 * Expiry compares the holder's clock with the reader's: the TTL must be
 * well above the clock skew between hosts (NTP keeps it to seconds).
 */

struct lock_info {
	char owner[65];
	uint64_t expires_ms;
	char etag[128];
};

static int lock_parse(const char *body, size_t len, struct lock_info *ret)
{
	size_t ml = strlen(LOCK_MAGIC);
	if (!body || len < ml || len > LOCK_MAX_SIZE || memcmp(body, LOCK_MAGIC, ml) != 0 ||
	    memchr(body, 0, len))
		return -EBADMSG;
	struct lock_info li = { 0 };
	int have_owner = 0, have_expires = 0;
	const char *p = body + ml, *end = body + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			return -EBADMSG;
		if ((size_t)(nl - p) > 6 && !memcmp(p, "owner ", 6) && nl - p - 6 < 65) {
			memcpy(li.owner, p + 6, (size_t)(nl - p - 6));
			li.owner[nl - p - 6] = 0;
			have_owner = 1;
		} else if ((size_t)(nl - p) > 11 && !memcmp(p, "expires-ms ", 11)) {
			if (ferry_parse_u64(p + 11, (size_t)(nl - p - 11), UINT64_MAX,
					    &li.expires_ms) < 0)
				return -EBADMSG;
			have_expires = 1;
		}
		/* Unknown lines are for later minor versions. */
		p = nl + 1;
	}
	if (!have_owner || !have_expires || !li.owner[0])
		return -EBADMSG;
	*ret = li;
	return 0;
}

static int lock_read(struct s3 *s, const char *key, struct lock_info *ret)
{
	_cleanup_response_ struct ferry_http_response resp = { 0 };
	int r = s3_do(s, &(struct s3_req){ .method = "GET", .key = key }, &resp);
	if (r < 0)
		return r;
	struct lock_info li;
	r = lock_parse(resp.body, resp.body_len, &li);
	if (r < 0)
		return r;
	if (!resp.etag[0])
		return -EBADMSG;
	snprintf(li.etag, sizeof(li.etag), "%s", resp.etag);
	*ret = li;
	return 0;
}

static uint64_t now_ms(void)
{
	return (uint64_t)(ferry_now_ns() / 1000000);
}

static int lock_body(const char *owner, unsigned ttl_s, char *buf, size_t size)
{
	int n = snprintf(buf, size, LOCK_MAGIC "owner %s\nexpires-ms %" PRIu64 "\n", owner,
			 now_ms() + (uint64_t)(ttl_s ? ttl_s : 1) * 1000);
	return n < 0 || (size_t)n >= size ? -EINVAL : n;
}

static int s3_lock_acquire(struct ferry_blobs *b, const char *name, unsigned ttl_s, char token[128])
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;

	uint8_t rnd[16];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -errno ? -errno : -EIO;
	char owner[33];
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(owner + 2 * i, 3, "%02x", rnd[i]);

	static const struct sigv4_header inm = { "If-None-Match", "*" };
	for (int attempt = 0;; attempt++) {
		char body[256];
		int n = lock_body(owner, ttl_s, body, sizeof(body));
		if (n < 0)
			return n;
		r = put_object(s, key, body, (size_t)n, &inm, NULL, 0);
		if (r >= 0)
			break;
		if (r != -EEXIST)
			return r;

		struct lock_info li;
		r = lock_read(s, key, &li);
		if (r == -ENOENT && attempt == 0)
			continue; /* released meanwhile: try the create once more */
		if (r == -ENOENT)
			return -EBUSY;
		if (r < 0)
			return r;
		/* Our own create, landed by an attempt whose answer was lost. */
		if (!strcmp(li.owner, owner))
			break;
		if (li.expires_ms > now_ms() || attempt > 0)
			return -EBUSY;

		const struct sigv4_header im = { "If-Match", li.etag };
		r = delete_object(s, key, &im);
		if (r == -EEXIST) /* 412: renewed or replaced since we read it */
			return -EBUSY;
		if (r < 0 && r != -ENOENT)
			return r;
	}
	snprintf(token, 128, "%s", owner);
	return 0;
}

static int s3_lock_renew(struct ferry_blobs *b, const char *name, const char *token, unsigned ttl_s)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	struct lock_info li;
	r = lock_read(s, key, &li);
	/* Gone or someone else's: the lock was lost (expired and taken over). */
	if (r == -ENOENT)
		return -EBUSY;
	if (r < 0)
		return r;
	if (strcmp(li.owner, token) != 0)
		return -EBUSY;
	char body[256];
	int n = lock_body(token, ttl_s, body, sizeof(body));
	if (n < 0)
		return n;
	const struct sigv4_header im = { "If-Match", li.etag };
	r = put_object(s, key, body, (size_t)n, &im, NULL, 0);
	if (r == -EEXIST || r == -ENOENT)
		return -EBUSY;
	return r;
}

static int s3_lock_release(struct ferry_blobs *b, const char *name, const char *token)
{
	struct s3 *s = b->priv;
	_cleanup_free_ char *key = NULL;
	int r = full_key(s, name, &key);
	if (r < 0)
		return r;
	struct lock_info li;
	r = lock_read(s, key, &li);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (strcmp(li.owner, token) != 0)
		return 0; /* a successor's lock: not ours to delete */
	const struct sigv4_header im = { "If-Match", li.etag };
	r = delete_object(s, key, &im);
	if (r == -EEXIST || r == -ENOENT)
		return 0;
	return r;
}

const struct blobs_ops blobs_s3_ops = {
	.scheme = "s3",
	.open = s3_open,
	.close = s3_close,
	.put = s3_put,
	.get_range = s3_get_range,
	.get = s3_get,
	.size = s3_size,
	.del = s3_del,
	.list = s3_list,
	.lock_acquire = s3_lock_acquire,
	.lock_renew = s3_lock_renew,
	.lock_release = s3_lock_release,
};
