/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Azure Blob Storage backend of the blobs layer: azblob://CONTAINER[/PREFIX]
 * over the Blob REST API (version 2021-08-06), with SharedKey signing of our
 * own (HMAC-SHA256 over the canonical request) or a SAS token in the query.
 * Blobs are block blobs: one Put Blob, or for large ones blocks uploaded in
 * parallel and committed with one Put Block List, so a reader never sees
 * half a blob. Exclusive puts are If-None-Match: * and locks are blob leases.
 * List Blobs pages are read with libxml2, locked down by blobs-xml.h.
 * Credentials come from the options (ferry_blobs_set_options), never from
 * the URL, so the URL can be printed.
 */
#include "blobs-internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "blobs-xml.h"
#include "ferry/crypto.h"
#include "ferry/util.h"

#define API_VERSION "2021-08-06"
#define DEV_ACCOUNT "devstoreaccount1"
#define DEV_KEY \
	"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DEV_ENDPOINT "http://127.0.0.1:10000/" DEV_ACCOUNT
/* Above this a put goes up as parallel blocks; packs are at most 256 MiB. */
#define SINGLE_PUT_MAX (64u * 1024u * 1024u)
#define BLOCK_SIZE (16u * 1024u * 1024u)
#define LIST_PAGE 5000u

struct azure {
	char *account;
	void *key; /* decoded account key; NULL with a SAS or anonymous */
	size_t keylen;
	char *sas;      /* query string without '?', or NULL */
	char *endpoint; /* scheme://host[:port][/path], no trailing '/' */
	char *container;
	char *prefix; /* "" or ending in '/' */
	struct ferry_http *http;
	unsigned max_results;
	unsigned parallel;
};

static struct azure *A(const struct ferry_blobs *b)
{
	return b->priv;
}

static void azure_free(struct azure *a)
{
	if (!a)
		return;
	ferry_http_free(a->http);
	free(a->account);
	if (a->key)
		explicit_bzero(a->key, a->keylen);
	free(a->key);
	if (a->sas)
		explicit_bzero(a->sas, strlen(a->sas));
	free(a->sas);
	free(a->endpoint);
	free(a->container);
	free(a->prefix);
	free(a);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct azure *, azure_free)

/* --- SharedKey signing --- */

/* Percent-decodes n bytes of s; "+" stays "+" (not a form encoding). */
static char *pct_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = ferry_hex_digit(s[i + 1])) >= 0 &&
		    (lo = ferry_hex_digit(s[i + 2])) >= 0) {
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else
			*o++ = s[i];
	}
	*o = 0;
	return out;
}

struct kv {
	char *k, *v;
};

static int kv_cmp(const void *x, const void *y)
{
	const struct kv *a = x, *b = y;
	int c = strcmp(a->k, b->k);
	return c ? c : strcmp(a->v, b->v);
}

static void kv_free(struct kv *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].k);
		free(v[i].v);
	}
	free(v);
}

/* A growing string; failures stick and show at the end. */
struct sbuf {
	char *s;
	size_t len, cap;
	int oom;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + n + 1);
		char *p = realloc(b->s, MAX(cap, (size_t)256));
		if (!p) {
			b->oom = 1;
			return;
		}
		b->s = p;
		b->cap = MAX(cap, (size_t)256);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

static void sb_add(struct sbuf *b, const char *s)
{
	sb_addn(b, s, strlen(s));
}

static int sb_take(struct sbuf *b, char **ret)
{
	if (b->oom || !b->s) {
		free(b->s);
		return -ENOMEM;
	}
	*ret = b->s;
	return 0;
}

static const char *hdr(const struct ferry_http_header *h, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(h[i].name, name) == 0)
			return h[i].value;
	return "";
}

/* Canonical query: name:value lines, names lower-cased, values decoded,
 * sorted by name, repeated names joined with ','. */
static int canon_query(struct sbuf *sb, const char *q)
{
	struct kv *v = NULL;
	size_t n = 0;
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > 0) {
			const char *eq = memchr(p, '=', len);
			size_t klen = eq ? (size_t)(eq - p) : len;
			struct kv *nv = realloc(v, (n + 1) * sizeof(*v));
			if (!nv) {
				kv_free(v, n);
				return -ENOMEM;
			}
			v = nv;
			v[n].k = pct_decode(p, klen);
			v[n].v = eq ? pct_decode(eq + 1, len - klen - 1) : strdup("");
			n++;
			if (!v[n - 1].k || !v[n - 1].v) {
				kv_free(v, n);
				return -ENOMEM;
			}
			for (char *c = v[n - 1].k; *c; c++)
				*c = (char)tolower((unsigned char)*c);
		}
		p = amp ? amp + 1 : NULL;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), kv_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(v[i].k, v[i - 1].k) == 0) {
			sb_add(sb, ",");
		} else {
			sb_add(sb, "\n");
			sb_add(sb, v[i].k);
			sb_add(sb, ":");
		}
		sb_add(sb, v[i].v);
	}
	kv_free(v, n);
	return 0;
}

static int hdr_cmp(const void *x, const void *y)
{
	return strcmp(((const struct kv *)x)->k, ((const struct kv *)y)->k);
}

static int canon_headers(struct sbuf *sb, const struct ferry_http_header *h, size_t n)
{
	struct kv *v = calloc(n ? n : 1, sizeof(*v));
	size_t m = 0;
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (strncasecmp(h[i].name, "x-ms-", 5) != 0)
			continue;
		const char *s = h[i].value, *e = s + strlen(s);
		while (*s == ' ' || *s == '\t')
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		v[m].k = strdup(h[i].name);
		v[m].v = strndup(s, (size_t)(e - s));
		m++;
		if (!v[m - 1].k || !v[m - 1].v) {
			kv_free(v, m);
			return -ENOMEM;
		}
		for (char *c = v[m - 1].k; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	}
	if (m > 1)
		qsort(v, m, sizeof(*v), hdr_cmp);
	for (size_t i = 0; i < m; i++) {
		sb_add(sb, v[i].k);
		sb_add(sb, ":");
		sb_add(sb, v[i].v);
		sb_add(sb, "\n");
	}
	kv_free(v, m);
	return 0;
}

int azure_string_to_sign(const char *account, const char *method, const char *url,
			 const struct ferry_http_header *headers, size_t nheaders,
			 uint64_t content_length, char **ret)
{
	const char *p = strstr(url, "://");
	if (!p)
		return -EINVAL;
	p += 3;
	const char *path = p + strcspn(p, "/?");
	const char *q = strchr(path, '?');
	size_t plen = q ? (size_t)(q - path) : strlen(path);

	char cl[24] = "";
	if (content_length > 0)
		snprintf(cl, sizeof(cl), "%llu", (unsigned long long)content_length);

	struct sbuf sb = { 0 };
	sb_add(&sb, method);
	sb_add(&sb, "\n");
	static const char *const std[] = { "Content-Encoding", "Content-Language" };
	for (size_t i = 0; i < ARRAY_SIZE(std); i++) {
		sb_add(&sb, hdr(headers, nheaders, std[i]));
		sb_add(&sb, "\n");
	}
	sb_add(&sb, cl);
	sb_add(&sb, "\n");
	static const char *const rest[] = { "Content-MD5",         "Content-Type", "Date",
					    "If-Modified-Since",   "If-Match",     "If-None-Match",
					    "If-Unmodified-Since", "Range" };
	for (size_t i = 0; i < ARRAY_SIZE(rest); i++) {
		sb_add(&sb, hdr(headers, nheaders, rest[i]));
		sb_add(&sb, "\n");
	}
	int r = canon_headers(&sb, headers, nheaders);
	if (r >= 0) {
		sb_add(&sb, "/");
		sb_add(&sb, account);
		if (plen)
			sb_addn(&sb, path, plen);
		else
			sb_add(&sb, "/");
		r = canon_query(&sb, q ? q + 1 : NULL);
	}
	if (r < 0) {
		free(sb.s);
		return r;
	}
	return sb_take(&sb, ret);
}

int azure_authorization(const char *account, const void *key, size_t keylen, const char *method,
			const char *url, const struct ferry_http_header *headers, size_t nheaders,
			uint64_t content_length, char **ret)
{
	_cleanup_free_ char *sts = NULL, *sig = NULL;
	int r = azure_string_to_sign(account, method, url, headers, nheaders, content_length, &sts);
	if (r < 0)
		return r;
	uint8_t mac[32];
	ferry_hmac_sha256(key, keylen, sts, strlen(sts), mac);
	r = ferry_base64_encode(mac, sizeof(mac), &sig);
	if (r < 0)
		return r;
	return asprintf(ret, "SharedKey %s:%s", account, sig) < 0 ? -ENOMEM : 0;
}

/* RFC 1123 date without strftime, whose day names follow the locale. */
static void http_date(char buf[40])
{
	static const char days[][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(buf, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
		 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Per-request signing state: the strings handed out live here. */
struct signer {
	const struct azure *a;
	char date[40];
	char *auth;
};

static int sign_cb(void *ud, const struct ferry_http_request *req, struct ferry_http_header *out,
		   size_t max)
{
	struct signer *s = ud;
	if (max < 3)
		return -ENOBUFS;
	http_date(s->date);
	out[0] = (struct ferry_http_header){ "x-ms-date", s->date };
	out[1] = (struct ferry_http_header){ "x-ms-version", API_VERSION };
	if (!s->a->key)
		return 2;

	/* The signature covers every header we send, fixed and ours. */
	size_t n = req->nheaders + 2;
	_cleanup_free_ struct ferry_http_header *all = calloc(n, sizeof(*all));
	if (!all)
		return -ENOMEM;
	if (req->nheaders)
		memcpy(all, req->headers, req->nheaders * sizeof(*all));
	all[req->nheaders] = out[0];
	all[req->nheaders + 1] = out[1];
	free(s->auth);
	s->auth = NULL;
	int r = azure_authorization(s->a->account, s->a->key, s->a->keylen, req->method, req->url,
				    all, n, req->body_len, &s->auth);
	if (r < 0)
		return r;
	out[2] = (struct ferry_http_header){ "Authorization", s->auth };
	return 3;
}

/* --- requests --- */

/* URL of the container (name NULL) or of a blob, with query q (escaped). */
static int make_url(const struct azure *a, const char *name, const char *q, char **ret)
{
	_cleanup_free_ char *full = NULL, *esc = NULL;
	if (name) {
		if (asprintf(&full, "%s%s", a->prefix, name) < 0)
			return -ENOMEM;
		int r = ferry_http_escape(full, 1, &esc);
		if (r < 0)
			return r;
	}
	int has_q = q && *q;
	const char *sas = a->key ? NULL : a->sas;
	if (asprintf(ret, "%s/%s%s%s%s%s%s%s", a->endpoint, a->container, esc ? "/" : "", esc ?: "",
		     has_q || sas ? "?" : "", has_q ? q : "", has_q && sas ? "&" : "",
		     sas ?: "") < 0)
		return -ENOMEM;
	return 0;
}

struct call {
	const char *method;
	const char *name; /* blob, or NULL for the container */
	const char *query;
	const struct ferry_http_header *headers;
	size_t nheaders;
	const void *body;
	size_t body_len;
	void *into;
	size_t into_cap;
	size_t body_max; /* see ferry_http_request */
};

static int azure_call(const struct azure *a, const struct call *c, struct ferry_http_response *resp)
{
	_cleanup_free_ char *url = NULL;
	int r = make_url(a, c->name, c->query, &url);
	if (r < 0)
		return r;
	struct signer s = { .a = a };
	struct ferry_http_request req = {
		.method = c->method,
		.url = url,
		.body = c->body,
		.body_len = c->body_len,
		.sign = sign_cb,
		.sign_userdata = &s,
		.headers = c->headers,
		.nheaders = c->nheaders,
		.into = c->into,
		.into_cap = c->into_cap,
		.body_max = c->body_max,
	};
	r = ferry_http_do(a->http, &req, resp);
	free(s.auth);
	/* The URL may carry a SAS: wipe it rather than leave it in freed heap. */
	explicit_bzero(url, strlen(url));
	return r;
}

/* The same call when the response does not matter beyond its status. */
static int azure_simple(const struct azure *a, const struct call *c)
{
	struct ferry_http_response resp;
	int r = azure_call(a, c, &resp);
	ferry_http_response_clear(&resp);
	return r;
}

/* After a retried exclusive put answers "exists", the blob may be our own
 * first attempt whose answer got lost: identical bytes mean success. */
static int same_content(struct ferry_blobs *b, const char *name, const void *buf, size_t len)
{
	void *got = NULL;
	size_t glen = 0;
	int r = blobs_azure_ops.get(b, name, len, &got, &glen);
	if (r < 0)
		return 0;
	int same = glen == len && (len == 0 || memcmp(got, buf, len) == 0);
	free(got);
	return same;
}

struct block_job {
	const struct azure *a;
	const char *name;
	const char *buf;
	size_t len;
	unsigned nblocks, next;
	int error;
	pthread_mutex_t mu;
};

static void block_id(unsigned i, char out[64])
{
	char raw[32];
	_cleanup_free_ char *b64 = NULL;
	/* Every id of a blob must have the same length. */
	snprintf(raw, sizeof(raw), "ferry-block-%08u", i);
	out[0] = 0;
	if (ferry_base64_encode(raw, strlen(raw), &b64) >= 0)
		snprintf(out, 64, "%s", b64);
}

static void *block_worker(void *ud)
{
	struct block_job *j = ud;
	for (;;) {
		pthread_mutex_lock(&j->mu);
		unsigned i = j->next++;
		int stop = j->error < 0 || i >= j->nblocks;
		pthread_mutex_unlock(&j->mu);
		if (stop)
			return NULL;

		char id[64];
		block_id(i, id);
		_cleanup_free_ char *eid = NULL, *q = NULL;
		int r = id[0] ? ferry_http_escape(id, 0, &eid) : -ENOMEM;
		if (r >= 0 && asprintf(&q, "comp=block&blockid=%s", eid) < 0)
			r = -ENOMEM;
		if (r >= 0) {
			size_t off = (size_t)i * BLOCK_SIZE;
			struct call c = { .method = "PUT",
					  .name = j->name,
					  .query = q,
					  .body = j->buf + off,
					  .body_len = MIN((size_t)BLOCK_SIZE, j->len - off) };
			r = azure_simple(j->a, &c);
		}
		if (r < 0) {
			pthread_mutex_lock(&j->mu);
			if (j->error == 0)
				j->error = r;
			pthread_mutex_unlock(&j->mu);
		}
	}
}

/* Large blobs: blocks in parallel, then one commit that makes them visible
 * at once (uncommitted blocks are invisible and expire on their own). */
static int put_blocks(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		      int exclusive, struct ferry_http_response *resp)
{
	const struct azure *a = A(b);
	struct block_job j = {
		.a = a,
		.name = name,
		.buf = buf,
		.len = len,
		.nblocks = (unsigned)DIV_ROUND_UP(len, (size_t)BLOCK_SIZE),
	};
	pthread_mutex_init(&j.mu, NULL);
	ferry_run_parallel(block_worker, &j, MIN(a->parallel, j.nblocks));
	pthread_mutex_destroy(&j.mu);
	if (j.error < 0)
		return j.error;

	struct sbuf sb = { 0 };
	sb_add(&sb, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
	for (unsigned i = 0; i < j.nblocks; i++) {
		char id[64];
		block_id(i, id);
		sb_add(&sb, "<Latest>");
		sb_add(&sb, id);
		sb_add(&sb, "</Latest>");
	}
	sb_add(&sb, "</BlockList>");
	_cleanup_free_ char *xml = NULL;
	int r = sb_take(&sb, &xml);
	if (r < 0)
		return r;
	struct ferry_http_header h[] = { { "If-None-Match", "*" } };
	struct call c = { .method = "PUT",
			  .name = name,
			  .query = "comp=blocklist",
			  .headers = h,
			  .nheaders = exclusive ? 1 : 0,
			  .body = xml,
			  .body_len = strlen(xml) };
	return azure_call(a, &c, resp);
}

static int azure_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		     int exclusive)
{
	const struct azure *a = A(b);
	struct ferry_http_response resp;
	int r;
	if (len > SINGLE_PUT_MAX) {
		if (exclusive) {
			/* Do not upload 256 MiB to learn that the name is taken. */
			struct ferry_http_response hr;
			struct call hc = { .method = "HEAD", .name = name };
			r = azure_call(a, &hc, &hr);
			ferry_http_response_clear(&hr);
			if (r >= 0)
				return -EEXIST;
			if (r != -ENOENT)
				return r;
		}
		r = put_blocks(b, name, buf, len, exclusive, &resp);
	} else {
		struct ferry_http_header h[] = {
			{ "x-ms-blob-type", "BlockBlob" },
			{ "If-None-Match", "*" },
		};
		struct call c = { .method = "PUT",
				  .name = name,
				  .headers = h,
				  .nheaders = exclusive ? 2 : 1,
				  .body = buf,
				  .body_len = len };
		r = azure_call(a, &c, &resp);
	}
	unsigned attempts = resp.attempts;
	ferry_http_response_clear(&resp);
	if (r == -EEXIST && exclusive && attempts > 1 && same_content(b, name, buf, len))
		return 0;
	return r;
}

/* "bytes FIRST-LAST/TOTAL" must name exactly the range asked for. */
static int range_matches(const char *cr, uint64_t off, size_t len)
{
	unsigned long long first, last;
	int n = 0;
	if (sscanf(cr, "bytes %llu-%llu/%*s%n", &first, &last, &n) < 2)
		return 0;
	return first == off && last == off + len - 1;
}

static int azure_size(struct ferry_blobs *b, const char *name, uint64_t *ret)
{
	struct ferry_http_response resp;
	struct call c = { .method = "HEAD", .name = name };
	int r = azure_call(A(b), &c, &resp);
	uint64_t size = resp.content_length;
	ferry_http_response_clear(&resp);
	if (r < 0)
		return r;
	*ret = size;
	return 0;
}

static int azure_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			   size_t len)
{
	if (off > UINT64_MAX - len)
		return -EBADMSG;
	if (len == 0) {
		uint64_t size;
		int r = azure_size(b, name, &size);
		if (r < 0)
			return r;
		return off > size ? -EBADMSG : 0;
	}
	char range[64];
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	struct ferry_http_header h[] = { { "Range", range } };
	struct ferry_http_response resp;
	struct call c = { .method = "GET",
			  .name = name,
			  .headers = h,
			  .nheaders = 1,
			  .into = buf,
			  .into_cap = len };
	int r = azure_call(A(b), &c, &resp);
	if (r == -ERANGE) /* the blob ends before off */
		r = -EBADMSG;
	else if (r >= 0 && resp.body_len != len)
		r = -EBADMSG; /* shorter than off+len */
	else if (r >= 0 && resp.status == 206 && !range_matches(resp.content_range, off, len))
		r = -EBADMSG;
	else if (r >= 0 && resp.status != 206 && off != 0)
		r = -EBADMSG;
	ferry_http_response_clear(&resp);
	return r;
}

static int azure_get(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
		     size_t *ret_len)
{
	struct ferry_http_response resp;
	/* An empty blob still needs a body_max: 0 would mean the default. */
	struct call c = { .method = "GET", .name = name, .body_max = (size_t)MAX(max, 1) };
	int r = azure_call(A(b), &c, &resp);
	if (r >= 0 && resp.body_len > max)
		r = -EFBIG;
	if (r >= 0 && resp.body_len != resp.content_length)
		r = -EBADMSG;
	if (r < 0) {
		ferry_http_response_clear(&resp);
		return r;
	}
	if (!resp.body) {
		resp.body = malloc(1);
		if (!resp.body)
			return -ENOMEM;
	}
	*ret_buf = resp.body;
	*ret_len = resp.body_len;
	return 0;
}

static int azure_del(struct ferry_blobs *b, const char *name)
{
	struct call c = { .method = "DELETE", .name = name };
	int r = azure_simple(A(b), &c);
	if (r == -ENOENT)
		return 0;
	if (r == -EEXIST) /* 412: a lease holds it */
		return -EBUSY;
	return r;
}

/* --- List Blobs XML --- */

/* One <Blob>: its <Name> and <Properties><Content-Length>. */
static int add_blob(const char *prefix, const xmlNode *blob, struct blob_list *out)
{
	xmlNode *name_node, *props;
	int r = blobs_xml_child(blob, "Name", &name_node);
	if (r < 0)
		return -EBADMSG;
	/* Names with characters XML cannot carry come percent-encoded, marked
	 * Encoded="true": never one of ours, whose names are plain. */
	if (blobs_xml_attr_is(name_node, "Encoded", "true"))
		return 0;
	_cleanup_free_ char *name = NULL, *cl = NULL;
	r = blobs_xml_text(name_node, &name);
	if (r < 0)
		return r;
	r = blobs_xml_child(blob, "Properties", &props);
	if (r >= 0)
		r = blobs_xml_child_text(props, "Content-Length", &cl);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	uint64_t size;
	if (ferry_parse_u64(cl, strlen(cl), UINT64_MAX, &size) < 0)
		return -EBADMSG;
	size_t plen = strlen(prefix);
	if (strncmp(name, prefix, plen) != 0)
		return 0;
	char *rel = strdup(name + plen);
	if (!rel)
		return -ENOMEM;
	r = blob_list_add(out, rel, size);
	if (r < 0)
		free(rel);
	return r;
}

/*
 * One page of List Blobs (an <EnumerationResults> whose <Blobs> holds a
 * <Blob> per blob, and <BlobPrefix> entries we never ask for): adds our
 * blobs, returns the next marker ("" at the end). Hostile input gets
 * -EBADMSG and adds nothing, never a crash.
 */
int azure_list_parse(const char *prefix, const char *xml, size_t len, struct blob_list *out,
		     char **ret_marker)
{
	_cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
	int r = blobs_xml_parse(xml, len, &doc);
	if (r < 0)
		return r;
	const xmlNode *root = xmlDocGetRootElement(doc);
	if (!blobs_xml_is(root, "EnumerationResults"))
		return -EBADMSG;

	_cleanup_free_ char *marker = NULL;
	r = blobs_xml_child_text(root, "NextMarker", &marker);
	if (r == -ENOENT)
		marker = strdup("");
	else if (r < 0)
		return r;
	if (!marker)
		return -ENOMEM;
	if (strlen(marker) > BLOBS_LIST_MARKER_MAX)
		return -EBADMSG;

	/* An empty page may have no <Blobs> at all. */
	xmlNode *blobs = NULL;
	r = blobs_xml_child(root, "Blobs", &blobs);
	if (r < 0 && r != -ENOENT)
		return r;
	size_t n0 = out->n;
	r = 0;
	for (const xmlNode *n = blobs ? blobs->children : NULL; n && r >= 0; n = n->next)
		r = blobs_xml_is(n, "Blob") ? add_blob(prefix, n, out) : 0;
	if (r < 0) {
		blob_list_truncate(out, n0);
		return r;
	}
	*ret_marker = TAKE_PTR(marker);
	return 0;
}

static int azure_list(struct ferry_blobs *b, const char *prefix, struct blob_list *out)
{
	const struct azure *a = A(b);
	_cleanup_free_ char *full = NULL, *eprefix = NULL, *marker = NULL;
	if (asprintf(&full, "%s%s", a->prefix, prefix) < 0)
		return -ENOMEM;
	int r = ferry_http_escape(full, 0, &eprefix);
	if (r < 0)
		return r;
	for (unsigned page = 0;; page++) {
		_cleanup_free_ char *emarker = NULL, *q = NULL;
		if (marker && (r = ferry_http_escape(marker, 0, &emarker)) < 0)
			return r;
		if (asprintf(&q, "restype=container&comp=list&prefix=%s&maxresults=%u%s%s", eprefix,
			     a->max_results, emarker ? "&marker=" : "", emarker ?: "") < 0)
			return -ENOMEM;
		if (page >= BLOBS_LIST_MAX_PAGES)
			return -E2BIG;
		struct ferry_http_response resp;
		struct call c = { .method = "GET", .query = q, .body_max = BLOBS_XML_MAX };
		r = azure_call(a, &c, &resp);
		_cleanup_free_ char *next = NULL;
		if (r >= 0)
			r = resp.body ? azure_list_parse(a->prefix, resp.body, resp.body_len, out,
							 &next) :
					-EBADMSG;
		ferry_http_response_clear(&resp);
		if (r < 0)
			return r;
		if (!*next)
			return 0;
		/* A server that hands back the same marker would loop forever. */
		if (marker && strcmp(marker, next) == 0)
			return -EBADMSG;
		free(marker);
		marker = TAKE_PTR(next);
	}
}

/* --- leases --- */

static int new_lease_id(char out[37])
{
	uint8_t u[16];
	if (getrandom(u, sizeof(u), 0) != sizeof(u))
		return -EIO;
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
	return 0;
}

static unsigned lease_seconds(unsigned ttl_s)
{
	/* Azure's finite leases last 15 to 60 seconds. */
	return MAX(15u, MIN(ttl_s, 60u));
}

static int azure_lock_acquire(struct ferry_blobs *b, const char *name, unsigned ttl_s,
			      char token[128])
{
	const struct azure *a = A(b);
	int r = azure_put(b, name, "", 0, 1);
	/* 409/412 here: it exists already, perhaps leased by another. */
	if (r < 0 && r != -EEXIST)
		return r;

	char id[37], dur[16];
	r = new_lease_id(id);
	if (r < 0)
		return r;
	snprintf(dur, sizeof(dur), "%u", lease_seconds(ttl_s));
	/* A proposed id makes a retried acquire whose answer got lost succeed:
	 * acquiring with the id of the active lease is allowed. */
	struct ferry_http_header h[] = {
		{ "x-ms-lease-action", "acquire" },
		{ "x-ms-lease-duration", dur },
		{ "x-ms-proposed-lease-id", id },
	};
	struct call c = {
		.method = "PUT", .name = name, .query = "comp=lease", .headers = h, .nheaders = 3
	};
	struct ferry_http_response resp;
	r = azure_call(a, &c, &resp);
	if (r >= 0)
		snprintf(token, 128, "%s", resp.lease_id[0] ? resp.lease_id : id);
	ferry_http_response_clear(&resp);
	return r == -EEXIST ? -EBUSY : r;
}

static int lease_action(struct ferry_blobs *b, const char *name, const char *token,
			const char *action, unsigned ttl_s)
{
	struct ferry_http_header h[] = {
		{ "x-ms-lease-action", action },
		{ "x-ms-lease-id", token },
	};
	struct call c = {
		.method = "PUT", .name = name, .query = "comp=lease", .headers = h, .nheaders = 2
	};
	int r = azure_simple(A(b), &c);
	/* 409 LeaseIdMismatch / LeaseNotPresent: another holder took it over. */
	return r == -EEXIST ? -EBUSY : r;
}

static int azure_lock_renew(struct ferry_blobs *b, const char *name, const char *token,
			    unsigned ttl_s)
{
	return lease_action(b, name, token, "renew", ttl_s);
}

static int azure_lock_release(struct ferry_blobs *b, const char *name, const char *token)
{
	return lease_action(b, name, token, "release", 0);
}

/* --- open --- */

static int container_valid(const char *c)
{
	size_t n = strlen(c);
	if (n < 3 || n > 63 || c[0] == '-' || c[n - 1] == '-' || strstr(c, "--"))
		return 0;
	for (; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			return 0;
	return 1;
}

static int set_str(char **dst, const char *s, size_t n)
{
	char *d = strndup(s, n);
	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

static int set_key(struct azure *a, const char *b64)
{
	void *k = NULL;
	size_t n = 0;
	int r = ferry_base64_decode(b64, &k, &n);
	if (r < 0)
		return -EINVAL;
	if (a->key)
		explicit_bzero(a->key, a->keylen);
	free(a->key);
	a->key = k;
	a->keylen = n;
	return 0;
}

static int set_sas(struct azure *a, const char *s)
{
	while (*s == '?')
		s++;
	return *s ? set_str(&a->sas, s, strlen(s)) : 0;
}

/* AccountName=..;AccountKey=..;BlobEndpoint=..;... (keys case-insensitive,
 * values may hold '=' as base64 and SAS tokens do). */
static int parse_connection_string(struct azure *a, const char *cs)
{
	_cleanup_free_ char *proto = NULL, *suffix = NULL;
	int dev = 0, r = 0;
	for (const char *p = cs; *p && r >= 0;) {
		size_t len = strcspn(p, ";");
		const char *eq = memchr(p, '=', len);
		if (eq) {
			size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
			_cleanup_free_ char *v = strndup(eq + 1, vlen);
			if (!v)
				return -ENOMEM;
#define K(name) (klen == strlen(name) && strncasecmp(p, name, klen) == 0)
			if (K("AccountName"))
				r = set_str(&a->account, v, vlen);
			else if (K("AccountKey"))
				r = set_key(a, v);
			else if (K("BlobEndpoint"))
				r = set_str(&a->endpoint, v, vlen);
			else if (K("SharedAccessSignature"))
				r = set_sas(a, v);
			else if (K("DefaultEndpointsProtocol"))
				r = set_str(&proto, v, vlen);
			else if (K("EndpointSuffix"))
				r = set_str(&suffix, v, vlen);
			else if (K("UseDevelopmentStorage"))
				dev = strcasecmp(v, "true") == 0;
#undef K
			if (v)
				explicit_bzero(v, vlen);
		} else if (len > 0)
			return -EINVAL;
		p += len;
		if (*p == ';')
			p++;
	}
	if (r < 0)
		return r;
	if (dev) {
		if ((r = set_str(&a->account, DEV_ACCOUNT, strlen(DEV_ACCOUNT))) < 0 ||
		    (r = set_key(a, DEV_KEY)) < 0)
			return r;
		if (!a->endpoint &&
		    (r = set_str(&a->endpoint, DEV_ENDPOINT, strlen(DEV_ENDPOINT))) < 0)
			return r;
	}
	if (!a->account)
		return -EINVAL;
	if (!a->endpoint) {
		char *e;
		if (asprintf(&e, "%s://%s.blob.%s", proto ?: "https", a->account,
			     suffix ?: "core.windows.net") < 0)
			return -ENOMEM;
		a->endpoint = e;
	}
	return 0;
}

static int credentials(struct azure *a)
{
	const struct ferry_blobs_options *o = blobs_options();
	int r;
	if (o->azure_connection_string && *o->azure_connection_string)
		return parse_connection_string(a, o->azure_connection_string);
	if (!o->azure_account || !*o->azure_account)
		return -ENOKEY;
	if ((r = set_str(&a->account, o->azure_account, strlen(o->azure_account))) < 0)
		return r;
	if (o->azure_key && *o->azure_key && (r = set_key(a, o->azure_key)) < 0)
		return r;
	if (o->azure_sas && (r = set_sas(a, o->azure_sas)) < 0)
		return r;
	if (asprintf(&a->endpoint, "https://%s.blob.core.windows.net", a->account) < 0)
		return -ENOMEM;
	return 0;
}

static int azure_open(struct ferry_blobs *b, const char *where, int create)
{
	_cleanup_(azure_freep) struct azure *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;

	size_t clen = strcspn(where, "/");
	const char *pfx = where + clen;
	while (*pfx == '/')
		pfx++;
	int r = set_str(&a->container, where, clen);
	if (r < 0)
		return r;
	if (!container_valid(a->container))
		return -EINVAL;
	_cleanup_free_ char *p = strdup(pfx);
	if (!p)
		return -ENOMEM;
	size_t plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		p[--plen] = 0;
	if (plen > 0 && !blobs_name_valid(p, 0))
		return -EINVAL;
	if (asprintf(&a->prefix, "%s%s", p, plen ? "/" : "") < 0)
		return -ENOMEM;

	r = credentials(a);
	if (r < 0)
		return r;
	size_t elen = strlen(a->endpoint);
	while (elen > 0 && a->endpoint[elen - 1] == '/')
		a->endpoint[--elen] = 0;
	const struct ferry_blobs_options *o = blobs_options();
	r = blobs_endpoint_allowed(a->endpoint, o->insecure_http);
	if (r < 0)
		return r;

	a->max_results = LIST_PAGE;
	a->parallel = o->parallel ? MIN(o->parallel, 64u) : 4;
	struct ferry_http_options ho;
	blobs_http_options(&ho);
	r = ferry_http_new(&ho, &a->http);
	if (r < 0)
		return r;

	struct call c = { .method = create ? "PUT" : "HEAD", .query = "restype=container" };
	r = azure_simple(a, &c);
	if (create && r == -EEXIST) /* ContainerAlreadyExists */
		r = 0;
	/* A least-privilege SAS may not read container properties; its
	 * first real operation tells whether it works. */
	if (!create && r == -EACCES && !a->key && a->sas)
		r = 0;
	if (r < 0)
		return r;
	b->priv = TAKE_PTR(a);
	return 0;
}

static void azure_close(struct ferry_blobs *b)
{
	azure_free(b->priv);
	b->priv = NULL;
}

void blobs_azure_set_max_results(struct ferry_blobs *b, unsigned n)
{
	if (b->ops == &blobs_azure_ops && n > 0)
		A(b)->max_results = MIN(n, LIST_PAGE);
}

int blobs_azure_set_http_fault(struct ferry_blobs *b,
			       int (*fault)(const char *method, const char *url, void *ud),
			       void *ud)
{
	if (b->ops != &blobs_azure_ops)
		return -EINVAL;
	struct ferry_http_options ho;
	blobs_http_options(&ho);
	ho.fault = fault;
	ho.fault_userdata = ud;
	/* Tests want retries fast. */
	ho.backoff_base_ns = 1000 * 1000;
	ho.backoff_max_ns = 10 * 1000 * 1000;
	struct ferry_http *h;
	int r = ferry_http_new(&ho, &h);
	if (r < 0)
		return r;
	ferry_http_free(A(b)->http);
	A(b)->http = h;
	return 0;
}

const struct blobs_ops blobs_azure_ops = {
	.scheme = "azblob",
	.open = azure_open,
	.close = azure_close,
	.put = azure_put,
	.get_range = azure_get_range,
	.get = azure_get,
	.size = azure_size,
	.del = azure_del,
	.list = azure_list,
	.lock_acquire = azure_lock_acquire,
	.lock_renew = azure_lock_renew,
	.lock_release = azure_lock_release,
};
