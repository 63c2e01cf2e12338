/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the blobs layer's local backend: round trips, exclusive
 * puts, byte-ordered recursive listing, hostile names, missing blobs, URL
 * schemes, and the fault-injection seam (a failed put leaves nothing). And
 * the object stores' listing parsers without a server: real-looking pages,
 * and XML that must be refused (entities, nesting, malformed listings).
 */
#include "ferry/blobs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobs-internal.h"
#include "blobs-s3.h"
#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)

struct names {
	char buf[4096];
	unsigned n;
};

static int collect(const char *name, uint64_t size, void *ud)
{
	struct names *c = ud;
	size_t l = strlen(c->buf);
	snprintf(c->buf + l, sizeof(c->buf) - l, "%s%s:%llu", l ? " " : "", name,
		 (unsigned long long)size);
	c->n++;
	return 0;
}

static int stop_at_two(const char *name, uint64_t size, void *ud)
{
	unsigned *n = ud;
	return ++*n == 2 ? -ECANCELED : 0;
}

struct fault_state {
	int ops_left; /* fail every operation once this reaches 0 */
	unsigned calls;
};

static int fault_cb(const char *op, const char *name, void *ud)
{
	struct fault_state *f = ud;
	f->calls++;
	if (f->ops_left == 0)
		return -EIO;
	f->ops_left--;
	return 0;
}

static int count_tmp(const char *dir)
{
	_cleanup_free_ char *cmd = NULL;
	if (asprintf(&cmd, "find '%s' -name '.tmp-*' | wc -l", dir) < 0)
		return -1;
	FILE *p = popen(cmd, "r");
	int n = -1;
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

/* --- the object stores' listing parsers (libxml2; blobs-xml.h) --- */

static void list_done(struct blob_list *l)
{
	blob_list_truncate(l, 0);
	free(l->v);
	*l = (struct blob_list){ 0 };
}

/* "name:size name:size" of a listing, for comparisons. */
static const char *list_str(const struct blob_list *l)
{
	static char buf[512];
	buf[0] = 0;
	for (size_t i = 0; i < l->n; i++) {
		size_t n = strlen(buf);
		snprintf(buf + n, sizeof(buf) - n, "%s%s:%llu", i ? " " : "", l->v[i].name,
			 (unsigned long long)l->v[i].size);
	}
	return buf;
}

/* Azurite's answer, byte order mark and all. */
#define AZ_ROOT                                                                            \
	"<EnumerationResults ServiceEndpoint=\"http://127.0.0.1:10000/devstoreaccount1\" " \
	"ContainerName=\"c\"><Prefix>p/</Prefix><MaxResults>3</MaxResults><Blobs>"
#define AZ_HEAD "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?>" AZ_ROOT
#define AZ_BLOB(name, len)                                                                    \
	"<Blob><Name>" name "</Name><Properties><Last-Modified>Tue, 02 Jan 2024 10:00:00 GMT" \
	"</Last-Modified><Etag>0x8DC</Etag><Content-Length>" len "</Content-Length>"          \
	"<Content-MD5 /><BlobType>BlockBlob</BlobType></Properties><OrMetadata /></Blob>"

static int az(const char *xml, struct blob_list *l, char **marker)
{
	return azure_list_parse("p/", xml, strlen(xml), l, marker);
}

static void test_azure_list_parse(void)
{
	struct blob_list l = { 0 };
	char *m = NULL;

	static const char page[] = AZ_HEAD AZ_BLOB("p/a", "1") AZ_BLOB("p/b&amp;&#x63;", "22")
		AZ_BLOB("q/x", "3") "<BlobPrefix><Name>p/dir/</Name></BlobPrefix></Blobs>"
				    "<NextMarker>2!80!MDAw</NextMarker></EnumerationResults>";
	ok_r(az(page, &l, &m), "azure: a page with a byte order mark");
	ok(strcmp(list_str(&l), "a:1 b&c:22") == 0, "azure: our blobs, relative, decoded: %s",
	   list_str(&l));
	ok(m && strcmp(m, "2!80!MDAw") == 0, "azure: next marker");
	free(m);
	m = NULL;
	static const char last[] = AZ_HEAD AZ_BLOB(
		"<![CDATA[p/<c>]]>", "4") "</Blobs><NextMarker /></EnumerationResults>";
	ok_r(az(last, &l, &m), "azure: last page, CDATA name");
	ok(strcmp(list_str(&l), "a:1 b&c:22 <c>:4") == 0 && m && !*m,
	   "azure: appended, empty marker: %s", list_str(&l));
	free(m);
	m = NULL;
	static const char encoded[] = AZ_HEAD
		"<Blob><Name Encoded=\"true\">p%2Fx</Name></Blob></Blobs></EnumerationResults>";
	ok_r(az(encoded, &l, &m), "azure: encoded names are skipped, no marker is the end");
	ok(l.n == 3 && m && !*m, "azure: nothing added");
	free(m);
	m = NULL;
	static const char empty[] = "<EnumerationResults><Prefix>p/</Prefix><NextMarker />"
				    "</EnumerationResults>";
	ok_r(az(empty, &l, &m), "azure: an empty page without <Blobs>");
	ok(l.n == 3 && m && !*m, "azure: nothing added, the end");
	free(m);
	m = NULL;

	static const struct {
		const char *what, *xml;
	} bad[] = {
		{ "a later blob without a length",
		  AZ_HEAD AZ_BLOB("p/ok", "1") "<Blob><Name>p/x</Name><Properties /></Blob></Blobs>"
					       "</EnumerationResults>" },
		{ "a length that is not a number",
		  AZ_HEAD AZ_BLOB("p/x", "1k") "</Blobs></EnumerationResults>" },
		{ "an internal entity", "<!DOCTYPE x [<!ENTITY e \"p/x\">]>" AZ_ROOT AZ_BLOB(
						"&e;", "1") "</Blobs></EnumerationResults>" },
		{ "an external entity",
		  "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><EnumerationResults>"
		  "<Blobs>" AZ_BLOB("p/&e;", "1") "</Blobs></EnumerationResults>" },
		{ "an undeclared entity",
		  AZ_HEAD AZ_BLOB("p/&e;", "1") "</Blobs></EnumerationResults>" },
		{ "an element in a name",
		  AZ_HEAD AZ_BLOB("p/<b/>", "1") "</Blobs></EnumerationResults>" },
		{ "two names", AZ_HEAD "<Blob><Name>p/a</Name><Name>p/b</Name></Blob></Blobs>"
				       "</EnumerationResults>" },
		{ "another root", "<Other><Blobs>" AZ_BLOB("p/x", "1") "</Blobs></Other>" },
		{ "a cut page", AZ_HEAD AZ_BLOB("p/x", "1") "</Blobs><NextMark" },
		{ "not XML", "p/x 1" },
		{ "nothing", "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ok(az(bad[i].xml, &l, &m) == -EBADMSG && !m && l.n == 3,
		   "azure: %s -> EBADMSG, nothing added", bad[i].what);
		free(m);
		m = NULL;
	}
	const char raw_nul[] =
		"<EnumerationResults><Blobs>" AZ_BLOB("p/x\0y", "1") "</Blobs>"
								     "</EnumerationResults>";
	ok(azure_list_parse("p/", raw_nul, sizeof(raw_nul) - 1, &l, &m) == -EBADMSG && l.n == 3,
	   "azure: a raw NUL -> EBADMSG");

	/* Nesting beyond libxml2's limit (256), and a 1 MiB name within it. */
	char *deep = NULL, *huge = NULL;
	size_t dlen = 0, hlen = 0;
	FILE *f = open_memstream(&deep, &dlen);
	fputs(AZ_HEAD AZ_BLOB("p/x", "1"), f);
	for (int i = 0; i < 1000; i++)
		fputs("<d>", f);
	for (int i = 0; i < 1000; i++)
		fputs("</d>", f);
	fputs("</Blobs></EnumerationResults>", f);
	fclose(f);
	ok(azure_list_parse("p/", deep, dlen, &l, &m) == -EBADMSG && l.n == 3,
	   "azure: 1000 levels deep -> EBADMSG");
	f = open_memstream(&huge, &hlen);
	fputs(AZ_HEAD "<Blob><Name>p/", f);
	for (int i = 0; i < 1024 * 1024; i++)
		fputc('n', f);
	fputs("</Name><Properties><Content-Length>5</Content-Length></Properties></Blob></Blobs>"
	      "</EnumerationResults>",
	      f);
	fclose(f);
	ok(azure_list_parse("p/", huge, hlen, &l, &m) >= 0 && l.n == 4 &&
		   strlen(l.v[3].name) == 1024 * 1024,
	   "azure: a 1 MiB name is read whole");
	free(m);
	m = NULL;
	free(deep);
	free(huge);
	list_done(&l);

	/* Bounds: a listing takes at most max entries, a marker is short. */
	l.max = 1;
	ok(az(page, &l, &m) == -E2BIG && l.n == 0 && !m,
	   "azure: a page beyond the listing's bound -> E2BIG, nothing added");
	l.max = 0;
	char *long_marker = NULL;
	size_t lmlen = 0;
	f = open_memstream(&long_marker, &lmlen);
	fputs(AZ_HEAD AZ_BLOB("p/x", "1") "</Blobs><NextMarker>", f);
	for (unsigned i = 0; i <= BLOBS_LIST_MARKER_MAX; i++)
		fputc('m', f);
	fputs("</NextMarker></EnumerationResults>", f);
	fclose(f);
	ok(azure_list_parse("p/", long_marker, lmlen, &l, &m) == -EBADMSG && l.n == 0 && !m,
	   "azure: a marker over %u bytes -> EBADMSG", BLOBS_LIST_MARKER_MAX);
	free(long_marker);
	list_done(&l);
}

#define S3_ROOT "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
#define S3_HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" S3_ROOT
#define S3_OBJ(key, size)                                                                  \
	"  <Contents>\n    <Key>" key "</Key>\n    <LastModified>2024-01-02T10:00:00.000Z" \
	"</LastModified>\n    <ETag>&quot;d41d8&quot;</ETag>\n    <Size>" size "</Size>\n" \
	"    <StorageClass>STANDARD</StorageClass>\n  </Contents>\n"

static int s3(const char *xml, struct blob_list *l, char **next)
{
	return s3_list_parse("p/", xml, strlen(xml), l, next);
}

static void test_s3_list_parse(void)
{
	struct blob_list l = { 0 };
	char *t = NULL;

	static const char page[] = S3_HEAD
		"  <Name>b</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount>"
		"<IsTruncated>true</IsTruncated>\n" S3_OBJ("p/", "9") S3_OBJ("p/a", "1")
			S3_OBJ("p/&lt;b&gt;",
			       "2") "  <NextContinuationToken>1ue/Gc+x=</NextContinuationToken>\n"
				    "</ListBucketResult>\n";
	ok_r(s3(page, &l, &t), "s3: a truncated page, pretty-printed");
	ok(strcmp(list_str(&l), "a:1 <b>:2") == 0, "s3: our keys, relative, decoded: %s",
	   list_str(&l));
	ok(t && strcmp(t, "1ue/Gc+x=") == 0, "s3: continuation token");
	free(t);
	t = NULL;
	static const char last[] = S3_HEAD "<IsTruncated>false</IsTruncated>" S3_OBJ(
		"p/<![CDATA[c]]>", "3") "</ListBucketResult>";
	ok_r(s3(last, &l, &t), "s3: the last page");
	ok(strcmp(list_str(&l), "a:1 <b>:2 c:3") == 0 && !t, "s3: appended, no token: %s",
	   list_str(&l));
	ok_r(s3(S3_ROOT "<KeyCount>0</KeyCount></ListBucketResult>", &l, &t),
	     "s3: an empty page without <IsTruncated>");
	ok(l.n == 3 && !t, "s3: nothing added, the end");

	static const struct {
		const char *what, *xml;
	} bad[] = {
		{ "truncated without a token", S3_HEAD
		  "<IsTruncated>true</IsTruncated>" S3_OBJ("p/x", "1") "</ListBucketResult>" },
		{ "an empty token",
		  S3_HEAD "<IsTruncated>true</IsTruncated><NextContinuationToken/>" S3_OBJ(
			  "p/x", "1") "</ListBucketResult>" },
		{ "a later object without a size",
		  S3_HEAD S3_OBJ("p/x",
				 "1") "<Contents><Key>p/y</Key></Contents></ListBucketResult>" },
		{ "a size too large",
		  S3_HEAD S3_OBJ("p/x", "18446744073709551616") "</ListBucketResult>" },
		{ "an entity", "<!DOCTYPE x [<!ENTITY e \"p/x\">]>" S3_ROOT S3_OBJ(
				       "&e;", "1") "</ListBucketResult>" },
		{ "another root", "<Error><Code>AccessDenied</Code></Error>" },
		{ "a cut page", S3_HEAD S3_OBJ("p/x", "1") },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ok(s3(bad[i].xml, &l, &t) == -EBADMSG && !t && l.n == 3,
		   "s3: %s -> EBADMSG, nothing added", bad[i].what);
		free(t);
		t = NULL;
	}
	ok(s3_list_parse("p/", NULL, 0, &l, &t) == -EBADMSG, "s3: no body -> EBADMSG");
	list_done(&l);

	/* Bounds: a listing takes at most max entries, a token is short. */
	l.max = 1;
	ok(s3(page, &l, &t) == -E2BIG && l.n == 0 && !t,
	   "s3: a page beyond the listing's bound -> E2BIG, nothing added");
	l.max = 2;
	ok(s3(page, &l, &t) == 0 && l.n == 2, "s3: a page of exactly the bound");
	free(t);
	t = NULL;
	list_done(&l);
	char *long_token = NULL;
	size_t ltlen = 0;
	FILE *f = open_memstream(&long_token, &ltlen);
	fputs(S3_HEAD "<IsTruncated>true</IsTruncated><NextContinuationToken>", f);
	for (unsigned i = 0; i <= BLOBS_LIST_MARKER_MAX; i++)
		fputc('t', f);
	fputs("</NextContinuationToken>" S3_OBJ("p/x", "1") "</ListBucketResult>", f);
	fclose(f);
	ok(s3_list_parse("p/", long_token, ltlen, &l, &t) == -EBADMSG && l.n == 0 && !t,
	   "s3: a token over %u bytes -> EBADMSG", BLOBS_LIST_MARKER_MAX);
	free(long_token);
	list_done(&l);
}

static const char *insecure_env;

static const char *lookup_insecure(const char *name)
{
	return strcmp(name, "FERRY_INSECURE_HTTP") == 0 ? insecure_env : NULL;
}

/* Plain http:// only to this machine unless insecure_http; refused before
 * any connection, so these need no network. */
static void test_insecure_http(void)
{
	static const char *const allowed[] = {
		"https://example.com", "https://10.0.0.1:9000/x",      "http://127.0.0.1:10000/dev",
		"http://127.9.8.7",    "http://localhost:5000",        "http://LOCALHOST/x",
		"http://[::1]:9000",   "http://[::ffff:127.0.0.1]:1/", "http://u:p@127.0.0.1:1",
	};
	static const char *const refused[] = {
		"http://example.com",         "http://10.0.0.1:9000/x",
		"http://128.0.0.1",           "http://[::2]:9000",
		"http://localhost.evil.com",  "http://127.0.0.1.nip.io",
		"http://127.0.0.1@evil.com/", "http://[::ffff:10.0.0.1]",
	};
	for (size_t i = 0; i < ARRAY_SIZE(allowed); i++)
		ok(blobs_endpoint_allowed(allowed[i], 0) == 0, "%s allowed", allowed[i]);
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		ok(blobs_endpoint_allowed(refused[i], 0) == -ENOPROTOOPT, "%s refused", refused[i]);
		ok(blobs_endpoint_allowed(refused[i], 1) == 0, "%s allowed when insecure",
		   refused[i]);
	}
	ok(blobs_endpoint_allowed("ftp://127.0.0.1", 1) == -EINVAL, "another scheme -> EINVAL");
	ok(blobs_endpoint_allowed("http://:80/x", 0) == -EINVAL, "no host -> EINVAL");

	/* Through the backends: options as a program sets them. */
	struct ferry_blobs *x = NULL;
	struct ferry_blobs_options o = {
		.azure_connection_string = "AccountName=a;AccountKey=a2V5;"
					   "BlobEndpoint=http://192.0.2.1:10000/a",
		.aws_access_key_id = "k",
		.aws_secret_access_key = "s",
		.aws_endpoint_url = "http://192.0.2.1:5000",
	};
	ok_r(ferry_blobs_set_options(&o), "set options with http:// endpoints");
	ok(ferry_blobs_open("azblob://cont", 0, &x) == -ENOPROTOOPT, "azblob over http:// refused");
	ok(ferry_blobs_open("s3://bucket", 0, &x) == -ENOPROTOOPT, "s3 over http:// refused");
	ok(x == NULL, "no object on refusal");
	ok_r(ferry_blobs_set_options(NULL), "options reset");

	static const struct {
		const char *v;
		int want;
	} env[] = { { NULL, 0 }, { "", 0 }, { "0", 0 }, { "1", 1 }, { "yes", 1 } };
	for (size_t i = 0; i < ARRAY_SIZE(env); i++) {
		insecure_env = env[i].v;
		ok(ferry_blobs_options_from(lookup_insecure, &o) == 0 &&
			   o.insecure_http == env[i].want,
		   "FERRY_INSECURE_HTTP=%s -> %d", env[i].v ? env[i].v : "(unset)", env[i].want);
	}
}

int main(void)
{
	test_insecure_http();

	char tmpl[] = "/tmp/ferry-test-blobs-XXXXXX";
	char *dir = mkdtemp(tmpl);
	ok(dir != NULL, "mkdtemp");
	if (!dir)
		return tap_done();

	_cleanup_free_ char *root = NULL, *url = NULL;
	if (asprintf(&root, "%s/loc", dir) < 0 || asprintf(&url, "file://%s", root) < 0)
		return 1;

	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	ok(ferry_blobs_open(root, 0, &b) == -ENOENT, "open missing without create -> ENOENT");
	ok_r(ferry_blobs_open(url, 1, &b), "open file:// with create");
	if (!b)
		return tap_done();
	ok(strcmp(ferry_blobs_url(b), url) == 0, "url kept as given");
	ok(ferry_blobs_local_dir(b) && strcmp(ferry_blobs_local_dir(b), root) == 0,
	   "local_dir is the directory");

	/* URL schemes */
	struct ferry_blobs *x = NULL;
	ok(ferry_blobs_open("azblob://container", 0, &x) == -ENOKEY, "azblob without credentials");
	ok(ferry_blobs_open("azblob://Bad_Container", 0, &x) == -EINVAL, "azblob: bad container");
	ok(ferry_blobs_open("gopher://x/y", 0, &x) == -EPROTONOSUPPORT, "unknown scheme");
	ok(ferry_blobs_open("", 0, &x) == -EINVAL, "empty url -> EINVAL");
	ok(ferry_blobs_open("file://host/p", 0, &x) == -EINVAL, "file://host -> EINVAL");
	ok(x == NULL, "no object on failure");
	ok_r(ferry_blobs_open(root, 0, &x), "plain path opens the same location");
	x = ferry_blobs_free(x);

	/* round trips */
	const char hello[] = "hello, blobs";
	ok_r(ferry_blobs_put(b, "a", hello, sizeof(hello), 0), "put a");
	void *got = NULL;
	size_t glen = 0;
	ok_r(ferry_blobs_get(b, "a", &got, &glen), "get a");
	ok(got && glen == sizeof(hello) && memcmp(got, hello, glen) == 0, "get a round trips");
	free(got);
	char part[5] = { 0 };
	ok_r(ferry_blobs_get_range(b, "a", 7, part, 4), "get_range a");
	ok(memcmp(part, "blob", 4) == 0, "get_range bytes");
	ok(ferry_blobs_get_range(b, "a", 10, part, 4) == -EBADMSG, "range past end -> EBADMSG");
	uint64_t size = 0;
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == sizeof(hello), "size a");
	ok_r(ferry_blobs_put(b, "empty", "", 0, 1), "put empty blob");
	ok(ferry_blobs_get(b, "empty", &got, &glen) >= 0 && glen == 0, "get empty blob");
	free(got);

	/* bounded reads: the size is checked before anything is read */
	got = NULL;
	ok(ferry_blobs_get_max(b, "a", sizeof(hello), &got, &glen) == 0 && glen == sizeof(hello),
	   "get_max of exactly the blob's size");
	free(got);
	got = NULL;
	ok(ferry_blobs_get_max(b, "a", sizeof(hello) - 1, &got, &glen) == -EFBIG && !got,
	   "get_max one byte short -> EFBIG, nothing returned");
	ok(ferry_blobs_get_max(b, "empty", 0, &got, &glen) == 0 && glen == 0,
	   "get_max 0 of an empty blob");
	free(got);
	ok(ferry_blobs_get_max(b, "nope", 10, &got, &glen) == -ENOENT, "get_max missing -> ENOENT");

	/* replace and exclusive */
	ok_r(ferry_blobs_put(b, "a", "xyz", 3, 0), "non-exclusive put replaces");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "replaced whole");
	ok(ferry_blobs_put(b, "a", "qq", 2, 1) == -EEXIST, "exclusive put on existing -> EEXIST");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "EEXIST left blob alone");
	ok_r(ferry_blobs_put(b, "deep/er/name.x", "d", 1, 1), "exclusive put creates dirs");
	ok(ferry_blobs_put(b, "deep/er/name.x", "e", 1, 1) == -EEXIST, "exclusive in subdir");
	ok(count_tmp(root) == 0, "no temp files left behind");

	/* missing */
	ok(ferry_blobs_get(b, "nope", &got, &glen) == -ENOENT, "get missing -> ENOENT");
	ok(ferry_blobs_get_range(b, "nope", 0, part, 1) == -ENOENT, "get_range missing -> ENOENT");
	ok(ferry_blobs_size(b, "nope", &size) == -ENOENT, "size missing -> ENOENT");
	ok(ferry_blobs_size(b, "deep", &size) == -ENOENT, "a directory is not a blob");
	ok(ferry_blobs_delete(b, "nope") == 0, "delete missing is fine");
	ok(ferry_blobs_delete(b, "no/such/dir") == 0, "delete in missing dir is fine");

	/* hostile names */
	static const char *const bad[] = {
		"",     "/etc/passwd", "../x",        "a/../b",   "a/..", "..",
		".",    "a/./b",       "a//b",        "a/",       "a b",  "a\\b",
		"a\nb", "caf\xc3\xa9", ".tmp-sneaky", "d/.tmp-x", "a*",   "a:b",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ok(ferry_blobs_put(b, bad[i], "x", 1, 0) == -EINVAL, "put rejects name #%zu", i);
		ok(ferry_blobs_get_range(b, bad[i], 0, part, 1) == -EINVAL,
		   "get_range rejects name #%zu", i);
		ok(ferry_blobs_delete(b, bad[i]) == -EINVAL, "delete rejects name #%zu", i);
	}
	ok(ferry_blobs_list(b, "../", collect, &(struct names){ 0 }) == -EINVAL,
	   "list rejects ../");
	ok(ferry_blobs_list(b, "/", collect, &(struct names){ 0 }) == -EINVAL, "list rejects /");
	_cleanup_free_ char *escaped = NULL;
	struct stat st;
	if (asprintf(&escaped, "%s/x", dir) < 0)
		return 1;
	ok(stat(escaped, &st) < 0 && errno == ENOENT, "nothing escaped the location");

	/* listing: byte order across directory levels, prefix filter */
	ok_r(ferry_blobs_delete(b, "deep/er/name.x"), "delete deep");
	ok(ferry_blobs_size(b, "deep/er/name.x", &size) == -ENOENT, "deleted");
	ok_r(ferry_blobs_delete(b, "empty"), "delete empty");
	static const char *const names[] = { "s/vm1/2", "s/vm1/10", "s/vm1.b", "s/vm1/1",
					     "s/A",     "t",        "s/vm2/1", "s/_" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ok_r(ferry_blobs_put(b, names[i], names[i], strlen(names[i]), 1), "put %s",
		     names[i]);
	/* a stray temp file and a foreign name are not blobs */
	_cleanup_free_ char *stray = NULL, *foreign = NULL;
	if (asprintf(&stray, "%s/s/.tmp-123", root) < 0 ||
	    asprintf(&foreign, "%s/s/has space", root) < 0)
		return 1;
	close(open(stray, O_CREAT | O_WRONLY, 0644));
	close(open(foreign, O_CREAT | O_WRONLY, 0644));

	struct names all = { 0 };
	ok_r(ferry_blobs_list(b, "", collect, &all), "list all");
	ok(strcmp(all.buf,
		  "a:3 s/A:3 s/_:3 s/vm1.b:7 s/vm1/1:7 s/vm1/10:8 s/vm1/2:7 s/vm2/1:7 t:1") == 0,
	   "list is recursive and byte-ordered: %s", all.buf);
	struct names vm1 = { 0 };
	ok_r(ferry_blobs_list(b, "s/vm1/", collect, &vm1), "list s/vm1/");
	ok(strcmp(vm1.buf, "s/vm1/1:7 s/vm1/10:8 s/vm1/2:7") == 0, "prefix dir: %s", vm1.buf);
	struct names part1 = { 0 };
	ok_r(ferry_blobs_list(b, "s/vm1", collect, &part1), "list s/vm1 (partial component)");
	ok(strcmp(part1.buf, "s/vm1.b:7 s/vm1/1:7 s/vm1/10:8 s/vm1/2:7") == 0, "partial: %s",
	   part1.buf);
	struct names none = { 0 };
	ok_r(ferry_blobs_list(b, "zzz/", collect, &none), "list of missing dir");
	ok(none.n == 0, "missing dir lists nothing");
	unsigned seen = 0;
	ok(ferry_blobs_list(b, NULL, stop_at_two, &seen) == -ECANCELED && seen == 2,
	   "negative cb return stops the walk and is returned");

	/* fault seam */
	struct fault_state f = { .ops_left = 0 };
	ferry_blobs_set_fault(b, fault_cb, &f);
	ok(ferry_blobs_local_dir(b) == NULL, "local_dir hidden while faults are injected");
	ok(ferry_blobs_put(b, "faulty", "x", 1, 1) == -EIO, "put fails under fault");
	ok(ferry_blobs_get_range(b, "a", 0, part, 1) == -EIO, "get_range fails under fault");
	ok(ferry_blobs_delete(b, "a") == -EIO, "delete fails under fault");
	ok(ferry_blobs_list(b, "", collect, &(struct names){ 0 }) == -EIO, "list fails");
	ok(f.calls == 4, "fault consulted once per op");
	f.ops_left = 2; /* crash after two operations */
	ok_r(ferry_blobs_put(b, "f1", "1", 1, 1), "op 1 passes");
	ok_r(ferry_blobs_put(b, "f2", "2", 1, 1), "op 2 passes");
	ok(ferry_blobs_put(b, "f3", "3", 1, 1) == -EIO, "op 3 fails");
	ferry_blobs_set_fault(b, NULL, NULL);
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "faulted delete had no effect");
	ok(ferry_blobs_size(b, "faulty", &size) == -ENOENT, "faulted put left no blob");
	ok(ferry_blobs_size(b, "f3", &size) == -ENOENT, "faulted put f3 left no blob");
	ok(ferry_blobs_size(b, "f2", &size) >= 0, "f2 before the crash is there");
	ok(count_tmp(root) == 1, "only the stray temp file exists");

	test_azure_list_parse();
	test_s3_list_parse();

	_cleanup_free_ char *rm = NULL;
	if (asprintf(&rm, "rm -rf '%s'", dir) >= 0 && system(rm) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
