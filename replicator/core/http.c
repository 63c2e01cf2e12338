/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The HTTP client of the object-store backends, over libcurl. Easy handles
 * are pooled (a stack under a mutex) and share one connection cache, DNS
 * cache and TLS session cache through a CURLSH, so parallel requests from
 * many threads reuse a few warm connections. Each attempt is signed afresh
 * (signatures cover the time), failures are classified into -errno once,
 * and retryable ones are retried with exponential backoff and full jitter
 * only when the program handed in a sleep function.
 */
#include "ferry/http.h"
#include "http-internal.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "ferry/util.h"

#define MAX_SIGNED_HEADERS 16
/* Error bodies are only for messages; a hostile server gets no more. */
#define ERROR_BODY_MAX (64u * 1024u)

struct ferry_http {
	struct ferry_http_options o;
	char *ca_bundle;
	CURLSH *share;
	pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_mu;
	CURL **pool;
	size_t npool, cap;
};

/* One attempt's transfer state. */
struct xfer {
	CURL *c;
	const struct ferry_http_request *req;
	struct ferry_http_response *resp;
	size_t sent;
	char *buf; /* allocated body (no req->into, or an error body) */
	size_t len, cap;
	size_t into_len;
	int overflow;
	int too_big; /* the body is over the request's body_max */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *ud)
{
	struct ferry_http *h = ud;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&h->share_mu[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *ud)
{
	struct ferry_http *h = ud;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&h->share_mu[data]);
}

int ferry_http_new(const struct ferry_http_options *opts, struct ferry_http **ret)
{
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return -ENOMEM;

	struct ferry_http *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	if (opts)
		h->o = *opts;
	if (h->o.ca_bundle) {
		h->ca_bundle = strdup(h->o.ca_bundle);
		if (!h->ca_bundle) {
			free(h);
			return -ENOMEM;
		}
		h->o.ca_bundle = h->ca_bundle;
	}
	if (!h->o.connect_timeout_s)
		h->o.connect_timeout_s = 10;
	if (!h->o.timeout_s)
		h->o.timeout_s = 300;
	if (!h->o.backoff_base_ns)
		h->o.backoff_base_ns = 100 * 1000 * 1000ull;
	if (!h->o.backoff_max_ns)
		h->o.backoff_max_ns = 20 * 1000 * 1000 * 1000ull;
	for (size_t i = 0; i < ARRAY_SIZE(h->share_mu); i++)
		pthread_mutex_init(&h->share_mu[i], NULL);
	pthread_mutex_init(&h->pool_mu, NULL);

	h->share = curl_share_init();
	if (!h->share) {
		ferry_http_free(h);
		return -ENOMEM;
	}
	curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	*ret = h;
	return 0;
}

struct ferry_http *ferry_http_free(struct ferry_http *h)
{
	if (!h)
		return NULL;
	/* Handles first: they hold references into the share. */
	for (size_t i = 0; i < h->npool; i++)
		curl_easy_cleanup(h->pool[i]);
	free(h->pool);
	if (h->share)
		curl_share_cleanup(h->share);
	for (size_t i = 0; i < ARRAY_SIZE(h->share_mu); i++)
		pthread_mutex_destroy(&h->share_mu[i]);
	pthread_mutex_destroy(&h->pool_mu);
	free(h->ca_bundle);
	free(h);
	return NULL;
}

static CURL *handle_get(struct ferry_http *h)
{
	CURL *c = NULL;
	pthread_mutex_lock(&h->pool_mu);
	if (h->npool > 0)
		c = h->pool[--h->npool];
	pthread_mutex_unlock(&h->pool_mu);
	if (c)
		curl_easy_reset(c);
	else
		c = curl_easy_init();
	return c;
}

static void handle_put(struct ferry_http *h, CURL *c)
{
	pthread_mutex_lock(&h->pool_mu);
	if (h->npool == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 8;
		CURL **p = realloc(h->pool, cap * sizeof(*p));
		if (p) {
			h->pool = p;
			h->cap = cap;
		}
	}
	if (h->npool < h->cap) {
		h->pool[h->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&h->pool_mu);
	if (c)
		curl_easy_cleanup(c);
}

void ferry_http_response_clear(struct ferry_http_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	*resp = (struct ferry_http_response){ 0 };
}

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t want = size * nmemb, left = x->req->body_len - x->sent;
	size_t n = MIN(want, left);
	if (n)
		memcpy(dst, (const char *)x->req->body + x->sent, n);
	x->sent += n;
	return n;
}

/* curl rewinds the upload when it must resend it (a reused connection
 * that turned out dead). */
static int seek_cb(void *ud, curl_off_t off, int origin)
{
	struct xfer *x = ud;
	if (origin != SEEK_SET || off < 0 || (uint64_t)off > x->req->body_len)
		return CURL_SEEKFUNC_FAIL;
	x->sent = (size_t)off;
	return CURL_SEEKFUNC_OK;
}

static int append(struct xfer *x, const char *src, size_t n, size_t limit)
{
	if (x->len + n > limit) {
		x->overflow = 1;
		return -1;
	}
	if (x->len + n + 1 > x->cap) {
		size_t cap = MAX(x->cap * 2, x->len + n + 1);
		cap = MAX(cap, (size_t)4096);
		char *p = realloc(x->buf, cap);
		if (!p)
			return -1;
		x->buf = p;
		x->cap = cap;
	}
	memcpy(x->buf + x->len, src, n);
	x->len += n;
	x->buf[x->len] = 0;
	return 0;
}

/* What a successful response's allocated body may hold. */
static size_t body_limit(const struct ferry_http_request *req)
{
	return req->body_max ? req->body_max : FERRY_HTTP_BODY_MAX;
}

static long status_of(CURL *c)
{
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

static int status_ok(CURL *c)
{
	long status = status_of(c);
	return status >= 200 && status < 300;
}

int http_body_refused(const struct ferry_http_request *req, long status,
		      const struct ferry_http_response *r)
{
	return status >= 200 && status < 300 && !req->into && strcmp(req->method, "HEAD") != 0 &&
	       r->content_length > body_limit(req);
}

static size_t write_cb(char *src, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;
	int ok = status_ok(x->c);

	if (ok && x->req->into) {
		/* A caller buffer: more than it holds is a protocol error
		 * (the server ignored our Range), never an overrun. */
		if (n > x->req->into_cap - x->into_len) {
			x->overflow = 1;
			return 0;
		}
		memcpy((char *)x->req->into + x->into_len, src, n);
		x->into_len += n;
		return n;
	}
	if (append(x, src, n, ok ? body_limit(x->req) : ERROR_BODY_MAX) < 0) {
		if (!ok) /* truncating an error message is fine */
			return n;
		x->too_big = x->overflow;
		return 0;
	}
	return n;
}

static void copy_value(char *dst, size_t size, const char *v, size_t n)
{
	if (n >= size) /* a value this long is not one we can use whole */
		n = 0;
	memcpy(dst, v, n);
	dst[n] = 0;
}

void http_header_line(struct ferry_http_response *r, const char *line, size_t n)
{
	/* A new status line (after a 100 Continue) starts a new header set. */
	if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		r->etag[0] = r->content_range[0] = r->lease_id[0] = r->request_id[0] = 0;
		r->content_length = 0;
		return;
	}
	const char *colon = memchr(line, ':', n);
	if (!colon)
		return;
	size_t klen = (size_t)(colon - line);
	const char *v = colon + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vlen = (size_t)(end - v);

#define IS(name) (klen == strlen(name) && strncasecmp(line, name, klen) == 0)
	if (IS("etag"))
		copy_value(r->etag, sizeof(r->etag), v, vlen);
	else if (IS("content-range"))
		copy_value(r->content_range, sizeof(r->content_range), v, vlen);
	else if (IS("x-ms-lease-id"))
		copy_value(r->lease_id, sizeof(r->lease_id), v, vlen);
	else if (IS("x-ms-request-id") || IS("x-amz-request-id"))
		copy_value(r->request_id, sizeof(r->request_id), v, vlen);
	else if (IS("content-length")) {
		uint64_t cl = 0;
		int good = vlen > 0 && vlen <= 19;
		for (size_t i = 0; good && i < vlen; i++) {
			if (!isdigit((unsigned char)v[i]))
				good = 0;
			else
				cl = cl * 10 + (uint64_t)(v[i] - '0');
		}
		r->content_length = good ? cl : 0;
	}
#undef IS
}

static size_t header_cb(char *line, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;
	http_header_line(x->resp, line, n);
	/* A body announced larger than the caller takes is refused before a
	 * byte of it arrives. */
	if (http_body_refused(x->req, status_of(x->c), x->resp)) {
		x->too_big = 1;
		return 0;
	}
	return n;
}

/* The -errno of a transfer that got no usable HTTP answer. */
static int classify_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -EAGAIN;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_READ_ERROR:
	case CURLE_ABORTED_BY_CALLBACK:
		return -EIO;
	default:
		/* TLS verification, bad CA file, protocol violations: retrying
		 * will not help and must not hide the problem. */
		return -EPROTO;
	}
}

static int classify_status(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 404:
		return -ENOENT;
	case 409:
	case 412:
		return -EEXIST;
	case 401:
	case 403:
		return -EACCES;
	case 416:
		return -ERANGE;
	case 408:
	case 429:
	case 500:
	case 502:
	case 503:
	case 504:
		return -EAGAIN;
	default:
		return status >= 500 && status != 501 && status != 505 ? -EAGAIN : -EPROTO;
	}
}

static int retryable(int r)
{
	return r == -EAGAIN || r == -ETIMEDOUT || r == -ECONNRESET || r == -ECONNABORTED ||
	       r == -EPIPE || r == -ECONNREFUSED;
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
	/* "Name;" sends an empty header; "Name:" would remove it. */
	_cleanup_free_ char *line = NULL;
	int n = *value ? asprintf(&line, "%s: %s", name, value) : asprintf(&line, "%s;", name);
	if (n < 0)
		return -ENOMEM;
	struct curl_slist *nl = curl_slist_append(*l, line);
	if (!nl)
		return -ENOMEM;
	*l = nl;
	return 0;
}

static int header_ok(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return 0;
	return 1;
}

static int build_headers(const struct ferry_http_request *req, const struct ferry_http_header *sh,
			 size_t nsh, struct curl_slist **ret)
{
	struct curl_slist *l = NULL;
	int r = 0;
	for (size_t i = 0; r >= 0 && i < req->nheaders + nsh; i++) {
		const struct ferry_http_header *hd = i < req->nheaders ? &req->headers[i] :
									 &sh[i - req->nheaders];
		if (!header_ok(hd->name) || !header_ok(hd->value))
			r = -EINVAL;
		else
			r = add_header(&l, hd->name, hd->value);
	}
	/* No 100-continue round trip: the servers we talk to answer errors
	 * promptly, and the wait costs a round trip on every large put. */
	if (r >= 0) {
		struct curl_slist *nl = curl_slist_append(l, "Expect:");
		if (!nl)
			r = -ENOMEM;
		else
			l = nl;
	}
	if (r < 0) {
		curl_slist_free_all(l);
		return r;
	}
	*ret = l;
	return 0;
}

static int attempt(struct ferry_http *h, CURL *c, const struct ferry_http_request *req,
		   struct ferry_http_response *resp)
{
	struct ferry_http_header sh[MAX_SIGNED_HEADERS];
	int nsh = 0;
	if (req->sign) {
		nsh = req->sign(req->sign_userdata, req, sh, ARRAY_SIZE(sh));
		if (nsh < 0)
			return nsh;
		if ((size_t)nsh > ARRAY_SIZE(sh))
			return -EINVAL;
	}
	struct curl_slist *hl = NULL;
	int r = build_headers(req, sh, (size_t)nsh, &hl);
	if (r < 0)
		return r;

	struct xfer x = { .c = c, .req = req, .resp = resp };
	int has_body = req->body_len > 0 || strcmp(req->method, "PUT") == 0 ||
		       strcmp(req->method, "POST") == 0;

	curl_easy_setopt(c, CURLOPT_SHARE, h->share);
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->o.ca_bundle)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->o.ca_bundle);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)h->o.connect_timeout_s);
	long timeout = (long)h->o.timeout_s;
	/* A rate cap must not turn a large upload into a timeout. */
	if (h->o.max_rate && req->body_len / h->o.max_rate * 2 + 60 > (uint64_t)timeout)
		timeout = (long)MIN(req->body_len / h->o.max_rate * 2 + 60, (uint64_t)LONG_MAX);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
	/* A stalled peer is noticed long before the whole-request timeout. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)MIN(h->o.timeout_s, 60u));
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	if (h->o.max_rate)
		curl_easy_setopt(c, CURLOPT_MAX_SEND_SPEED_LARGE, (curl_off_t)h->o.max_rate);
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (has_body) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(c, CURLOPT_READDATA, &x);
		curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_cb);
		curl_easy_setopt(c, CURLOPT_SEEKDATA, &x);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
		if (strcmp(req->method, "PUT") != 0)
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (strcmp(req->method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);

	CURLcode rc = curl_easy_perform(c);
	curl_slist_free_all(hl);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);

	if (x.too_big)
		r = -EFBIG;
	else if (rc == CURLE_WRITE_ERROR && x.overflow)
		r = -EBADMSG;
	else if (rc != CURLE_OK)
		r = classify_curl(rc);
	else
		r = classify_status(resp->status);
	if (r < 0 && rc != CURLE_OK)
		resp->status = 0;

	if (req->into && resp->status >= 200 && resp->status < 300) {
		resp->body_len = x.into_len;
		free(x.buf);
	} else {
		resp->body = x.buf;
		resp->body_len = x.len;
	}
	return r;
}

static uint64_t backoff_ns(const struct ferry_http *h, unsigned n)
{
	uint64_t cap = h->o.backoff_base_ns;
	for (unsigned i = 0; i < n && cap < h->o.backoff_max_ns; i++)
		cap *= 2;
	cap = MIN(cap, h->o.backoff_max_ns);
	/* Full jitter: clients that failed together do not retry together. */
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint64_t)ferry_now_ns() * 0x9e3779b97f4a7c15ull;
	return cap ? rnd % (cap + 1) : 0;
}

int ferry_http_do(struct ferry_http *h, const struct ferry_http_request *req,
		  struct ferry_http_response *resp)
{
	if (!req || !req->method || !req->url || (req->body_len && !req->body))
		return -EINVAL;
	*resp = (struct ferry_http_response){ 0 };

	unsigned budget = h->o.sleep ? h->o.max_retries : 0;
	int r = 0;
	for (unsigned n = 0;; n++) {
		ferry_http_response_clear(resp);
		resp->attempts = n + 1;
		if (n > 0)
			h->o.sleep(backoff_ns(h, n - 1));

		r = h->o.fault ? h->o.fault(req->method, req->url, h->o.fault_userdata) : 0;
		if (r >= 0) {
			CURL *c = handle_get(h);
			if (!c)
				return -ENOMEM;
			r = attempt(h, c, req, resp);
			handle_put(h, c);
		}
		if (r >= 0)
			return 0;
		if (!retryable(r) || n >= budget)
			return r;
	}
}

int ferry_http_escape(const char *s, int keep_slash, char **ret)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	if (n > (SIZE_MAX - 1) / 3)
		return -ENOMEM;
	char *out = malloc(n * 3 + 1), *o = out;
	if (!out)
		return -ENOMEM;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~' ||
		    (keep_slash && *p == '/')) {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = 0;
	*ret = out;
	return 0;
}
