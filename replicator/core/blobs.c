/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Named immutable blobs on a location given by URL: the generic layer. It
 * picks a backend by scheme (a plain path or file:// -> blobs-local.c,
 * azblob:// -> blobs-azure.c, s3:// -> blobs-s3.c), validates names once for
 * all of them, runs the fault-injection seam, filters and sorts listings,
 * keeps the process-wide credentials and network policy the programs set,
 * and maps the lock API onto each backend's lock primitive.
 */
#include "ferry/blobs.h"

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blobs-internal.h"
#include "ferry/fault.h"
#include "ferry/util.h"

#define TMP_PREFIX ".tmp-"
#define NAME_MAX_LEN 1024

struct ferry_blobs_lock {
	struct ferry_blobs *b;
	char *name;
	unsigned ttl_s;
	char token[128];
};

static void blob_list_done(struct blob_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (struct blob_list){ 0 };
}

int blob_list_add(struct blob_list *l, char *name, uint64_t size)
{
	if (l->n >= (l->max ? l->max : FERRY_BLOBS_LIST_MAX))
		return -E2BIG;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct blob_entry *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct blob_entry){ .name = name, .size = size };
	return 0;
}

static int name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* A whole path component: not "." or "..", not one of our temp files. */
static int component_ok(const char *c, size_t n)
{
	if (n == 0 || n > NAME_MAX)
		return 0;
	if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
		return 0;
	if (n >= strlen(TMP_PREFIX) && memcmp(c, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok(c[i]))
			return 0;
	return 1;
}

/*
 * Names are checked here, once, for every backend: they become paths in the
 * local backend and URL paths remotely, so anything that could climb out of
 * the location (leading '/', "..", empty components) is refused. A prefix
 * may end in '/' or in a partial last component.
 */
int blobs_name_valid(const char *s, int is_prefix)
{
	size_t len = strlen(s);
	if (len > NAME_MAX_LEN || (!is_prefix && len == 0))
		return 0;
	const char *p = s;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (slash || !is_prefix) {
			if (!component_ok(p, n))
				return 0;
		} else {
			for (size_t i = 0; i < n; i++)
				if (!name_char_ok(p[i]))
					return 0;
		}
		if (!slash)
			return 1;
		p = slash + 1;
		if (!*p && is_prefix)
			return 1;
	}
}

/* Where a blobs operation counts in a fault plan (fault.h). */
static enum ferry_fault_site fault_site(const char *op)
{
	if (strcmp(op, "put") == 0 || strcmp(op, "lock_acquire") == 0)
		return FERRY_FAULT_PUT;
	if (strcmp(op, "delete") == 0)
		return FERRY_FAULT_DELETE;
	if (strcmp(op, "list") == 0)
		return FERRY_FAULT_LIST;
	return FERRY_FAULT_GET;
}

/* The two seams: the process-wide plan (fault.h), and a callback set on
 * this handle (ferry_blobs_set_fault, unit tests). */
static int fault_check(struct ferry_blobs *b, const char *op, const char *name)
{
	int f = ferry_fault_before(fault_site(op), name);
	if (f < 0)
		return f;
	if (!b->fault)
		return 0;
	int r = b->fault(op, name, b->fault_ud);
	return r < 0 ? r : 0;
}

/* --- options --- */

/* Set once at startup by the program; the strings are ours (deep copies). */
static struct ferry_blobs_options options;
static pthread_mutex_t options_lock = PTHREAD_MUTEX_INITIALIZER;

static void options_done(struct ferry_blobs_options *o)
{
	free((char *)o->azure_connection_string);
	free((char *)o->azure_account);
	free((char *)o->azure_key);
	free((char *)o->azure_sas);
	free((char *)o->aws_access_key_id);
	free((char *)o->aws_secret_access_key);
	free((char *)o->aws_session_token);
	free((char *)o->aws_region);
	free((char *)o->aws_endpoint_url);
	free((char *)o->ca_bundle);
	*o = (struct ferry_blobs_options){ 0 };
}

static int dup_opt(const char *s, const char **ret)
{
	if (!s) {
		*ret = NULL;
		return 0;
	}
	char *d = strdup(s);
	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

int ferry_blobs_set_options(const struct ferry_blobs_options *opts)
{
	struct ferry_blobs_options n = { 0 };
	if (opts) {
		n = *opts;
		const char **strs[] = {
			&n.azure_connection_string,
			&n.azure_account,
			&n.azure_key,
			&n.azure_sas,
			&n.aws_access_key_id,
			&n.aws_secret_access_key,
			&n.aws_session_token,
			&n.aws_region,
			&n.aws_endpoint_url,
			&n.ca_bundle,
		};
		for (size_t i = 0; i < ARRAY_SIZE(strs); i++)
			*strs[i] = NULL;
		const char *const srcs[] = {
			opts->azure_connection_string,
			opts->azure_account,
			opts->azure_key,
			opts->azure_sas,
			opts->aws_access_key_id,
			opts->aws_secret_access_key,
			opts->aws_session_token,
			opts->aws_region,
			opts->aws_endpoint_url,
			opts->ca_bundle,
		};
		for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
			int r = dup_opt(srcs[i], strs[i]);
			if (r < 0) {
				options_done(&n);
				return r;
			}
		}
	}
	pthread_mutex_lock(&options_lock);
	options_done(&options);
	options = n;
	pthread_mutex_unlock(&options_lock);
	return 0;
}

/* Retries a program gets when it supplies a sleep: with http.c's default
 * backoff (100 ms doubling, full jitter) up to ~6 s of waiting in all, which
 * rides out a dropped connection or a throttling burst, not an outage. */
#define DEFAULT_MAX_RETRIES 6

static const char *lookup_nonempty(const char *(*lookup)(const char *name), const char *name)
{
	const char *v = lookup(name);
	return v && *v ? v : NULL;
}

int ferry_blobs_options_from(const char *(*lookup)(const char *name),
			     struct ferry_blobs_options *ret)
{
#define L(name) lookup_nonempty(lookup, name)
	*ret = (struct ferry_blobs_options){
		.azure_connection_string = L("AZURE_STORAGE_CONNECTION_STRING"),
		.azure_account = L("AZURE_STORAGE_ACCOUNT"),
		.azure_key = L("AZURE_STORAGE_KEY"),
		.azure_sas = L("AZURE_STORAGE_SAS_TOKEN"),
		.aws_access_key_id = L("AWS_ACCESS_KEY_ID"),
		.aws_secret_access_key = L("AWS_SECRET_ACCESS_KEY"),
		.aws_session_token = L("AWS_SESSION_TOKEN"),
		.aws_region = L("AWS_REGION") ?: L("AWS_DEFAULT_REGION"),
		.aws_endpoint_url = L("AWS_ENDPOINT_URL"),
		.ca_bundle = L("FERRY_CA_BUNDLE"),
		.max_retries = DEFAULT_MAX_RETRIES,
	};
	const char *insecure = L("FERRY_INSECURE_HTTP");
	ret->insecure_http = insecure && strcmp(insecure, "0") != 0;
#undef L
	/* Custom endpoints (moto, MinIO, private clouds) rarely have
	 * wildcard DNS for virtual-host buckets. */
	ret->s3_path_style = ret->aws_endpoint_url != NULL;
	return 0;
}

const struct ferry_blobs_options *blobs_options(void)
{
	return &options;
}

/* Whether host (no brackets, no port) is this machine: 127.0.0.0/8, ::1
 * (also as ::ffff:127.x.y.z) or localhost, which curl never looks up. */
static int host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return 0;
}

int blobs_endpoint_allowed(const char *url, int insecure_http)
{
	if (strncasecmp(url, "https://", 8) == 0)
		return 0;
	if (strncasecmp(url, "http://", 7) != 0)
		return -EINVAL;
	if (insecure_http)
		return 0;

	const char *auth = url + 7;
	size_t alen = strcspn(auth, "/?#");
	const char *at = memrchr(auth, '@', alen);
	if (at) {
		alen -= (size_t)(at + 1 - auth);
		auth = at + 1;
	}
	size_t hlen;
	if (alen > 0 && auth[0] == '[') {
		const char *close = memchr(auth, ']', alen);
		if (!close)
			return -EINVAL;
		auth++;
		hlen = (size_t)(close - auth);
	} else {
		const char *colon = memchr(auth, ':', alen);
		hlen = colon ? (size_t)(colon - auth) : alen;
	}
	char host[256];
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, auth, hlen);
	host[hlen] = 0;
	return host_is_loopback(host) ? 0 : -ENOPROTOOPT;
}

void blobs_http_options(struct ferry_http_options *ret)
{
	*ret = (struct ferry_http_options){
		.ca_bundle = options.ca_bundle,
		.max_retries = options.sleep ? options.max_retries : 0,
		.sleep = options.sleep,
		.max_rate = options.max_rate,
	};
}

/* --- generic layer --- */

static int pick_backend(const char *url, const struct blobs_ops **ret_ops, const char **ret_where)
{
	const char *sep = strstr(url, "://");
	if (!sep) {
		*ret_ops = &blobs_local_ops;
		*ret_where = url;
		return 0;
	}
	for (const char *p = url; p < sep; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+'))
			return -EINVAL;
	if (strncmp(url, "file://", 7) == 0) {
		const char *where = url + 7;
		/* file://localhost/p is the same as file:///p; other hosts are not ours. */
		if (strncmp(where, "localhost/", 10) == 0)
			where += 9;
		if (where[0] != '/')
			return -EINVAL;
		*ret_ops = &blobs_local_ops;
		*ret_where = where;
		return 0;
	}
	static const struct blobs_ops *const remote[] = { &blobs_azure_ops, &blobs_s3_ops };
	size_t slen = (size_t)(sep - url);
	for (size_t i = 0; i < ARRAY_SIZE(remote); i++)
		if (remote[i]->scheme && strlen(remote[i]->scheme) == slen &&
		    memcmp(remote[i]->scheme, url, slen) == 0) {
			*ret_ops = remote[i];
			*ret_where = sep + 3;
			return 0;
		}
	return -EPROTONOSUPPORT;
}

int ferry_blobs_open(const char *url, int create, struct ferry_blobs **ret)
{
	if (!url || !*url)
		return -EINVAL;

	const struct blobs_ops *ops;
	const char *where;
	int r = pick_backend(url, &ops, &where);
	if (r < 0)
		return r;
	if (!ops->open)
		return -EPROTONOSUPPORT;

	struct ferry_blobs *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->url = strdup(url);
	if (!b->url) {
		free(b);
		return -ENOMEM;
	}
	r = ops->open(b, where, create);
	/* Least-privilege credentials (an agent's SAS limited to one
	 * container, an IAM policy on one prefix) may not create a container
	 * or bucket, yet can use one that exists. */
	if (r == -EACCES && create)
		r = ops->open(b, where, 0);
	if (r < 0) {
		/* open cleans up after itself; close is only for opened ones. */
		free(b->url);
		free(b);
		return r;
	}
	b->ops = ops;
	*ret = b;
	return 0;
}

struct ferry_blobs *ferry_blobs_free(struct ferry_blobs *b)
{
	if (!b)
		return NULL;
	if (b->ops && b->ops->close)
		b->ops->close(b);
	free(b->url);
	free(b);
	return NULL;
}

const char *ferry_blobs_url(const struct ferry_blobs *b)
{
	return b->url;
}

const char *ferry_blobs_local_dir(const struct ferry_blobs *b)
{
	if (b->fault || !b->ops->local_dir)
		return NULL;
	return b->ops->local_dir(b);
}

void ferry_blobs_set_fault(struct ferry_blobs *b,
			   int (*fault)(const char *op, const char *name, void *ud), void *ud)
{
	b->fault = fault;
	b->fault_ud = ud;
}

int ferry_blobs_put(struct ferry_blobs *b, const char *name, const void *buf, size_t len,
		    int exclusive)
{
	if (!blobs_name_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "put", name);
	if (r < 0)
		return r;
	r = b->ops->put(b, name, buf, len, exclusive);
	if (r >= 0)
		ferry_fault_after(FERRY_FAULT_PUT);
	return r;
}

int ferry_blobs_get_range(struct ferry_blobs *b, const char *name, uint64_t off, void *buf,
			  size_t len)
{
	if (!blobs_name_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "get_range", name);
	if (r < 0)
		return r;
	return b->ops->get_range(b, name, off, buf, len);
}

int ferry_blobs_get(struct ferry_blobs *b, const char *name, void **ret_buf, size_t *ret_len)
{
	return ferry_blobs_get_max(b, name, SIZE_MAX / 2, ret_buf, ret_len);
}

int ferry_blobs_get_max(struct ferry_blobs *b, const char *name, uint64_t max, void **ret_buf,
			size_t *ret_len)
{
	if (!blobs_name_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "get", name);
	if (r < 0)
		return r;
	max = MIN(max, (uint64_t)SIZE_MAX / 2);
	if (b->ops->get)
		return b->ops->get(b, name, max, ret_buf, ret_len);

	uint64_t size;
	r = b->ops->size(b, name, &size);
	if (r < 0)
		return r;
	if (size > max)
		return -EFBIG;
	_cleanup_free_ void *buf = malloc(size ? (size_t)size : 1);
	if (!buf)
		return -ENOMEM;
	r = b->ops->get_range(b, name, 0, buf, (size_t)size);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = (size_t)size;
	return 0;
}

int ferry_blobs_size(struct ferry_blobs *b, const char *name, uint64_t *ret)
{
	if (!blobs_name_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "size", name);
	if (r < 0)
		return r;
	return b->ops->size(b, name, ret);
}

int ferry_blobs_delete(struct ferry_blobs *b, const char *name)
{
	if (!blobs_name_valid(name, 0))
		return -EINVAL;
	int r = fault_check(b, "delete", name);
	if (r < 0)
		return r;
	return b->ops->del(b, name);
}

static int entry_cmp(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: byte order, as promised. */
	return strcmp(((const struct blob_entry *)a)->name, ((const struct blob_entry *)b)->name);
}

int ferry_blobs_list(struct ferry_blobs *b, const char *prefix,
		     int (*cb)(const char *name, uint64_t size, void *userdata), void *userdata)
{
	if (!prefix)
		prefix = "";
	if (!blobs_name_valid(prefix, 1))
		return -EINVAL;
	int r = fault_check(b, "list", prefix);
	if (r < 0)
		return r;

	struct blob_list l = { 0 };
	r = b->ops->list(b, prefix, &l);
	if (r >= 0) {
		/* Backends may return more (a directory's worth) and foreign
		 * names another writer left in a shared container: neither
		 * is one of our blobs. */
		size_t plen = strlen(prefix), k = 0;
		for (size_t i = 0; i < l.n; i++) {
			if (strncmp(l.v[i].name, prefix, plen) == 0 &&
			    blobs_name_valid(l.v[i].name, 0))
				l.v[k++] = l.v[i];
			else
				free(l.v[i].name);
		}
		l.n = k;
		if (l.n > 1)
			qsort(l.v, l.n, sizeof(l.v[0]), entry_cmp);
		/* Collected first, so cb may delete what it is shown. */
		for (size_t i = 0; i < l.n && r >= 0; i++) {
			int q = cb(l.v[i].name, l.v[i].size, userdata);
			if (q < 0)
				r = q;
		}
	}
	blob_list_done(&l);
	return r < 0 ? r : 0;
}

/* --- locks --- */

int ferry_blobs_lock_acquire(struct ferry_blobs *b, const char *name, unsigned ttl_s,
			     struct ferry_blobs_lock **ret)
{
	if (!blobs_name_valid(name, 0) || ttl_s == 0)
		return -EINVAL;
	if (!b->ops->lock_acquire)
		return -EOPNOTSUPP;
	int r = fault_check(b, "lock_acquire", name);
	if (r < 0)
		return r;
	struct ferry_blobs_lock *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->name = strdup(name);
	if (!l->name) {
		free(l);
		return -ENOMEM;
	}
	r = b->ops->lock_acquire(b, name, ttl_s, l->token);
	if (r < 0) {
		free(l->name);
		free(l);
		return r;
	}
	l->token[sizeof(l->token) - 1] = 0;
	l->b = b;
	l->ttl_s = ttl_s;
	*ret = l;
	return 0;
}

int ferry_blobs_lock_renew(struct ferry_blobs_lock *l)
{
	int r = fault_check(l->b, "lock_renew", l->name);
	if (r < 0)
		return r;
	return l->b->ops->lock_renew(l->b, l->name, l->token, l->ttl_s);
}

struct ferry_blobs_lock *ferry_blobs_lock_release(struct ferry_blobs_lock *l)
{
	if (!l)
		return NULL;
	/* A failed release only delays the next holder until the ttl runs out. */
	(void)l->b->ops->lock_release(l->b, l->name, l->token);
	free(l->name);
	free(l);
	return NULL;
}
