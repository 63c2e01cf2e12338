/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the SigV4 signer against the fixed vectors that AWS
 * publishes for S3 (GET Object with a Range, PUT Object, GET Bucket
 * lifecycle, GET Bucket list): the same credentials, time and requests must
 * give the same canonical request and signature, with no server involved.
 * Also: URI encoding, session tokens, and malformed input refused cleanly.
 */
#include "sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

static const struct sigv4_credentials cred = {
	.access_key_id = "AKIAIOSFODNN7EXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

#define T20130524 ((time_t)1369353600) /* 2013-05-24T00:00:00Z */
#define HOST "examplebucket.s3.amazonaws.com"
static int starts_with(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

#define AUTH_PREFIX \
	"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"

static void test_get_object(void)
{
	const struct sigv4_header h[] = { { "Range", "bytes=0-9" } };
	struct sigv4_request req = {
		.method = "GET",
		.host = HOST,
		.path = "/test.txt",
		.headers = h,
		.nheaders = ARRAY_SIZE(h),
		.payload_hash = SIGV4_EMPTY_SHA256,
		.region = "us-east-1",
		.service = "s3",
		.now = T20130524,
	};
	struct sigv4_signed s;
	int r = sigv4_sign(&req, &cred, &s);
	ok_r(r, "GET Object signs");
	if (r < 0)
		return;
	ok(!strcmp(s.canonical_request,
		   "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
		   "x-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
		   "host;range;x-amz-content-sha256;x-amz-date\n" SIGV4_EMPTY_SHA256),
	   "GET Object canonical request");
	ok(!strcmp(s.string_to_sign,
		   "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
		   "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"),
	   "GET Object string to sign");
	ok(!strcmp(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
	   "GET Object signature %s", s.signature);
	ok(!strcmp(s.authorization, AUTH_PREFIX
		   "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
		   "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
	   "GET Object Authorization");
	ok(!strcmp(s.amz_date, "20130524T000000Z"), "x-amz-date");
	sigv4_signed_done(&s);
}

static void test_put_object(void)
{
	const char *body = "Welcome to Amazon S3.";
	struct ferry_id id;
	char hash[FERRY_ID_HEX_SIZE];
	ferry_sha256(body, strlen(body), &id);
	ferry_id_to_hex(&id, hash);
	ok(!strcmp(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
	   "PUT Object payload hash");
	/* Out of order and with odd case on purpose: the signer sorts and lowers. */
	const struct sigv4_header h[] = {
		{ "x-amz-storage-class", "REDUCED_REDUNDANCY" },
		{ "Date", "Fri, 24 May 2013 00:00:00 GMT" },
	};
	struct sigv4_request req = {
		.method = "PUT",
		.host = HOST,
		.path = "/test$file.text",
		.headers = h,
		.nheaders = ARRAY_SIZE(h),
		.payload_hash = hash,
		.region = "us-east-1",
		.service = "s3",
		.now = T20130524,
	};
	struct sigv4_signed s;
	int r = sigv4_sign(&req, &cred, &s);
	ok_r(r, "PUT Object signs");
	if (r < 0)
		return;
	ok(starts_with(s.canonical_request, "PUT\n/test%24file.text\n\n"),
	   "PUT Object: '$' encoded in the canonical URI");
	ok(!strcmp(s.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
	   "PUT Object signature %s", s.signature);
	ok(strstr(s.authorization,
		  "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,") !=
		   NULL,
	   "PUT Object signed headers");
	sigv4_signed_done(&s);
}

static void test_get_lifecycle(void)
{
	const struct sigv4_param q[] = { { "lifecycle", "" } };
	struct sigv4_request req = {
		.method = "GET",
		.host = HOST,
		.path = "/",
		.query = q,
		.nquery = ARRAY_SIZE(q),
		.payload_hash = SIGV4_EMPTY_SHA256,
		.region = "us-east-1",
		.service = "s3",
		.now = T20130524,
	};
	struct sigv4_signed s;
	int r = sigv4_sign(&req, &cred, &s);
	ok_r(r, "GET lifecycle signs");
	if (r < 0)
		return;
	ok(starts_with(s.canonical_request, "GET\n/\nlifecycle=\n"),
	   "GET lifecycle canonical query");
	ok(!strcmp(s.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
	   "GET lifecycle signature %s", s.signature);
	sigv4_signed_done(&s);
}

static void test_list_objects(void)
{
	/* Given out of order: the canonical query sorts by name. */
	const struct sigv4_param q[] = { { "prefix", "J" }, { "max-keys", "2" } };
	struct sigv4_request req = {
		.method = "GET",
		.host = HOST,
		.path = NULL,
		.query = q,
		.nquery = ARRAY_SIZE(q),
		.payload_hash = SIGV4_EMPTY_SHA256,
		.region = "us-east-1",
		.service = "s3",
		.now = T20130524,
	};
	struct sigv4_signed s;
	int r = sigv4_sign(&req, &cred, &s);
	ok_r(r, "list objects signs");
	if (r < 0)
		return;
	ok(starts_with(s.canonical_request, "GET\n/\nmax-keys=2&prefix=J\n"),
	   "list objects canonical query sorted");
	ok(!strcmp(s.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
	   "list objects signature %s", s.signature);
	sigv4_signed_done(&s);
}

static void test_details(void)
{
	char *e = NULL;
	ok(sigv4_uri_encode("a b/c~d$é", 1, &e) >= 0 && !strcmp(e, "a%20b/c~d%24%C3%A9"),
	   "path encoding keeps '/' and '~', encodes UTF-8 bytes: %s", e);
	free(e);
	ok(sigv4_uri_encode("p/x=y&z+", 0, &e) >= 0 && !strcmp(e, "p%2Fx%3Dy%26z%2B"),
	   "query encoding encodes '/', '=', '&', '+': %s", e);
	free(e);

	/* Same name twice sorts by value; whitespace in header values collapses. */
	const struct sigv4_param q[] = { { "b", "2" }, { "a", "y" }, { "b", "1" }, { "a", "x" } };
	const struct sigv4_header h[] = { { "X-Amz-Meta-A", "  two   words  " } };
	struct sigv4_credentials tc = cred;
	tc.session_token = "TOKEN/abc=";
	struct sigv4_request req = {
		.method = "GET",
		.host = "127.0.0.1:5000",
		.path = "/bucket/a b",
		.query = q,
		.nquery = ARRAY_SIZE(q),
		.headers = h,
		.nheaders = ARRAY_SIZE(h),
		.payload_hash = SIGV4_UNSIGNED_PAYLOAD,
		.region = "eu-west-1",
		.service = "s3",
		.now = T20130524,
	};
	struct sigv4_signed s;
	int r = sigv4_sign(&req, &tc, &s);
	ok_r(r, "session token request signs");
	if (r >= 0) {
		ok(!strcmp(s.canonical_request,
			   "GET\n/bucket/a%20b\na=x&a=y&b=1&b=2\nhost:127.0.0.1:5000\n"
			   "x-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:20130524T000000Z\n"
			   "x-amz-meta-a:two words\nx-amz-security-token:TOKEN/abc=\n\n"
			   "host;x-amz-content-sha256;x-amz-date;x-amz-meta-a;"
			   "x-amz-security-token\n"
			   "UNSIGNED-PAYLOAD"),
		   "canonical request with token, sorted duplicate params, trimmed values");
		ok(strstr(s.authorization, "/eu-west-1/s3/") != NULL, "region in scope");
		ok(!strstr(s.authorization, "wJalr") && !strstr(s.canonical_request, "wJalr"),
		   "secret appears nowhere");
		sigv4_signed_done(&s);
	}

	/* The moto compatibility mode keeps '/' in the canonical query only. */
	const struct sigv4_param pq[] = { { "prefix", "a/b/" }, { "list-type", "2" } };
	struct sigv4_request lreq = {
		.method = "GET",
		.host = "127.0.0.1:5000",
		.path = "/bucket",
		.query = pq,
		.nquery = ARRAY_SIZE(pq),
		.payload_hash = SIGV4_EMPTY_SHA256,
		.region = "us-east-1",
		.service = "s3",
		.now = T20130524,
	};
	r = sigv4_sign(&lreq, &cred, &s);
	ok(r >= 0 &&
		   starts_with(s.canonical_request, "GET\n/bucket\nlist-type=2&prefix=a%2Fb%2F\n"),
	   "'/' in a query value is %%2F");
	if (r >= 0)
		sigv4_signed_done(&s);
	lreq.query_keep_slash = 1;
	r = sigv4_sign(&lreq, &cred, &s);
	ok(r >= 0 && starts_with(s.canonical_request, "GET\n/bucket\nlist-type=2&prefix=a/b/\n"),
	   "query_keep_slash leaves it");
	if (r >= 0)
		sigv4_signed_done(&s);

	/* Malformed input gets -EINVAL, never a crash. */
	const struct sigv4_header bad_h[] = { { "X-Evil", "a\r\nhost: other" } };
	req.headers = bad_h;
	ok(sigv4_sign(&req, &cred, &s) == -EINVAL, "CR/LF in a header value refused");
	const struct sigv4_header host_h[] = { { "Host", "other" } };
	req.headers = host_h;
	ok(sigv4_sign(&req, &cred, &s) == -EINVAL, "caller-supplied Host refused");
	req.headers = h;
	req.payload_hash = "XYZ";
	ok(sigv4_sign(&req, &cred, &s) == -EINVAL, "bad payload hash refused");
	req.payload_hash = SIGV4_EMPTY_SHA256;
	req.region = "us east";
	ok(sigv4_sign(&req, &cred, &s) == -EINVAL, "bad region refused");
	req.region = "us-east-1";
	req.path = "no-slash";
	ok(sigv4_sign(&req, &cred, &s) == -EINVAL, "relative path refused");
}

int main(void)
{
	test_get_object();
	test_put_object();
	test_get_lifecycle();
	test_list_objects();
	test_details();
	return tap_done();
}
