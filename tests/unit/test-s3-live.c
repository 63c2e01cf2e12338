/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The S3 blobs backend against a live S3 server (moto, started by
 * tests/integration/s3.sh): round trips, ranged reads, sizes, paginated
 * listings, exclusive puts, deletes, the conditional-write lock (including
 * takeover of an expired one), a wrong secret and a missing bucket. TAP
 * output. Configuration from the environment, read as the programs read it
 * (replicator/lib/env.c) but for the endpoint:
 * FERRY_S3_ENDPOINT (required), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_REGION, FERRY_S3_BUCKET (default ferry-test), and FERRY_S3_AUTH=1
 * when the server checks signatures (so that a wrong secret must fail).
 */
#include "ferry/blobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blobs-s3.h"
#include "env.h"
#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)

static const char *endpoint, *bucket, *key_id, *secret, *region;

static int set_opts(const char *the_secret)
{
	struct ferry_blobs_options o = {
		.aws_access_key_id = key_id,
		.aws_secret_access_key = the_secret,
		.aws_region = region,
		.aws_endpoint_url = endpoint,
		.s3_path_style = 1,
	};
	return ferry_blobs_set_options(&o);
}

struct names {
	char buf[8192];
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

static void test_objects(struct ferry_blobs *b)
{
	char data[1000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7 + 3);
	ok_r(ferry_blobs_put(b, "packs/p-1.pack", data, sizeof(data), 0), "put");

	void *buf = NULL;
	size_t len = 0;
	int r = ferry_blobs_get(b, "packs/p-1.pack", &buf, &len);
	ok(r >= 0 && len == sizeof(data) && !memcmp(buf, data, len), "get round trip");
	free(buf);

	char part[100];
	r = ferry_blobs_get_range(b, "packs/p-1.pack", 450, part, sizeof(part));
	ok(r >= 0 && !memcmp(part, data + 450, sizeof(part)), "get_range middle");
	r = ferry_blobs_get_range(b, "packs/p-1.pack", 900, part, sizeof(part));
	ok(r >= 0 && !memcmp(part, data + 900, sizeof(part)), "get_range up to the end");
	ok(ferry_blobs_get_range(b, "packs/p-1.pack", 950, part, sizeof(part)) == -EBADMSG,
	   "get_range past the end: -EBADMSG");
	ok(ferry_blobs_get_range(b, "packs/p-1.pack", 5000, part, sizeof(part)) == -EBADMSG,
	   "get_range wholly past the end: -EBADMSG");
	ok(ferry_blobs_get_range(b, "packs/nope", 0, part, sizeof(part)) == -ENOENT,
	   "get_range of a missing blob: -ENOENT");

	uint64_t size = 0;
	r = ferry_blobs_size(b, "packs/p-1.pack", &size);
	ok(r >= 0 && size == sizeof(data), "size %llu", (unsigned long long)size);
	ok(ferry_blobs_size(b, "packs/nope", &size) == -ENOENT, "size of a missing blob: -ENOENT");

	ok_r(ferry_blobs_put(b, "empty", "", 0, 1), "empty exclusive put");
	r = ferry_blobs_size(b, "empty", &size);
	ok(r >= 0 && size == 0, "empty blob has size 0");
	r = ferry_blobs_get(b, "empty", &buf, &len);
	ok(r >= 0 && len == 0, "get of an empty blob");
	free(buf);

	/* Exclusive puts: the conditional create. */
	ok(ferry_blobs_put(b, "packs/p-1.pack", "x", 1, 1) == -EEXIST,
	   "exclusive put over an existing blob: -EEXIST");
	r = ferry_blobs_get(b, "packs/p-1.pack", &buf, &len);
	ok(r >= 0 && len == sizeof(data) && !memcmp(buf, data, len),
	   "refused exclusive put changed nothing");
	free(buf);
	ok_r(ferry_blobs_put(b, "packs/p-1.pack", "replaced", 8, 0), "plain put replaces");
	r = ferry_blobs_get(b, "packs/p-1.pack", &buf, &len);
	ok(r >= 0 && len == 8 && !memcmp(buf, "replaced", 8), "replacement reads back");
	free(buf);

	/* Something larger than one socket buffer, both ways. */
	size_t big_len = 5u << 20;
	_cleanup_free_ char *big = malloc(big_len);
	if (big) {
		for (size_t i = 0; i < big_len; i++)
			big[i] = (char)((i * 2654435761u) >> 13);
		ok_r(ferry_blobs_put(b, "packs/big.pack", big, big_len, 1), "5 MiB exclusive put");
		_cleanup_free_ char *got = malloc(1 << 20);
		r = -ENOMEM;
		if (got)
			r = ferry_blobs_get_range(b, "packs/big.pack", 3u << 20, got, 1 << 20);
		ok(r >= 0 && !memcmp(got, big + (3u << 20), 1 << 20), "1 MiB range of it");
	}

	ok_r(ferry_blobs_delete(b, "packs/p-1.pack"), "delete");
	ok(ferry_blobs_size(b, "packs/p-1.pack", &size) == -ENOENT, "deleted blob is gone");
	ok_r(ferry_blobs_delete(b, "packs/p-1.pack"), "deleting again is fine");
	ok_r(ferry_blobs_delete(b, "packs/big.pack"), "delete the big one");
	ok_r(ferry_blobs_delete(b, "empty"), "delete the empty one");
}

static void test_list(struct ferry_blobs *b, struct ferry_blobs *root)
{
	/* Written out of order; a listing comes back in byte order. */
	const char *names[] = { "seg/000007", "seg/000001", "seg/000003", "seg/000002",
				"seg/000010", "seg/000005", "seg/000004" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ok_r(ferry_blobs_put(b, names[i], names[i], i + 1, 1), "put %s", names[i]);
	ok_r(ferry_blobs_put(b, "segx", "y", 1, 0), "put segx");
	/* Beside the location, not in it: must never be listed. */
	ok_r(ferry_blobs_put(root, "outside/seg/000001", "z", 1, 0), "put outside the prefix");

	blobs_s3_set_max_keys(b, 2);
	struct names c = { 0 };
	int r = ferry_blobs_list(b, "seg/", collect, &c);
	ok_r(r, "list seg/ in pages of 2");
	ok(!strcmp(c.buf, "seg/000001:2 seg/000002:4 seg/000003:3 seg/000004:7 seg/000005:6 "
			  "seg/000007:1 seg/000010:5"),
	   "all 7 in order with sizes: %s", c.buf);

	memset(&c, 0, sizeof(c));
	r = ferry_blobs_list(b, "seg", collect, &c);
	ok(r >= 0 && c.n == 8 && strstr(c.buf, "segx:1"), "list with a partial prefix: %s", c.buf);
	memset(&c, 0, sizeof(c));
	r = ferry_blobs_list(b, "seg/00000", collect, &c);
	ok(r >= 0 && c.n == 6, "list seg/00000: %u", c.n);
	memset(&c, 0, sizeof(c));
	r = ferry_blobs_list(b, "nothing/", collect, &c);
	ok(r >= 0 && c.n == 0, "empty listing");
	blobs_s3_set_max_keys(b, 0);
	memset(&c, 0, sizeof(c));
	r = ferry_blobs_list(b, "", collect, &c);
	ok(r >= 0 && c.n == 8 && !strstr(c.buf, "outside"),
	   "whole location with the default page size, nothing from outside: %u", c.n);

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ferry_blobs_delete(b, names[i]);
	ferry_blobs_delete(b, "segx");
	ferry_blobs_delete(root, "outside/seg/000001");
	memset(&c, 0, sizeof(c));
	r = ferry_blobs_list(b, "", collect, &c);
	ok(r >= 0 && c.n == 0, "all deleted: %s", c.buf);
}

static void test_lock(struct ferry_blobs *b, struct ferry_blobs *b2)
{
	struct ferry_blobs_lock *l1 = NULL, *l2 = NULL;
	ok_r(ferry_blobs_lock_acquire(b, "replicator.lock", 60, &l1), "acquire");
	ok(ferry_blobs_lock_acquire(b2, "replicator.lock", 60, &l2) == -EBUSY,
	   "second acquire: -EBUSY");
	ok_r(ferry_blobs_lock_renew(l1), "renew");
	ok(ferry_blobs_lock_acquire(b2, "replicator.lock", 60, &l2) == -EBUSY,
	   "still -EBUSY after renew");
	ferry_blobs_lock_release(l1);
	l1 = NULL;
	ok_r(ferry_blobs_lock_acquire(b2, "replicator.lock", 60, &l2), "acquire after release");
	ferry_blobs_lock_release(l2);
	l2 = NULL;

	/* A holder that stopped renewing: its lock expires and is taken over. */
	ok_r(ferry_blobs_lock_acquire(b, "replicator.lock", 2, &l1), "acquire with 2 s TTL");
	ok(ferry_blobs_lock_acquire(b2, "replicator.lock", 60, &l2) == -EBUSY,
	   "busy before expiry");
	struct timespec ts = { 2, 500000000 };
	nanosleep(&ts, NULL);
	ok_r(ferry_blobs_lock_acquire(b2, "replicator.lock", 60, &l2), "expired lock taken over");
	ok(l1 && ferry_blobs_lock_renew(l1) == -EBUSY, "the old holder's renew: -EBUSY");
	ferry_blobs_lock_release(l1); /* must not delete the new holder's lock */
	l1 = NULL;
	ok(ferry_blobs_lock_acquire(b, "replicator.lock", 60, &l1) == -EBUSY,
	   "old holder's release left the new lock alone");
	ok(l2 && ferry_blobs_lock_renew(l2) >= 0, "new holder renews");
	ferry_blobs_lock_release(l2);
	uint64_t size;
	ok(ferry_blobs_size(b, "replicator.lock", &size) == -ENOENT, "release deletes the lock");
}

int main(void)
{
	endpoint = getenv("FERRY_S3_ENDPOINT");
	bucket = getenv("FERRY_S3_BUCKET") ?: "ferry-test";
	/* The credentials as every program reads them; the endpoint is the
	 * test's own, so that a stray AWS_ENDPOINT_URL cannot aim it at AWS. */
	struct ferry_blobs_options env;
	env_blobs_options(&env);
	key_id = env.aws_access_key_id ?: "testing";
	secret = env.aws_secret_access_key ?: "testing";
	region = env.aws_region ?: "us-east-1";
	int auth = getenv("FERRY_S3_AUTH") && !strcmp(getenv("FERRY_S3_AUTH"), "1");
	if (!endpoint) {
		printf("1..0 # SKIP FERRY_S3_ENDPOINT not set\n");
		return 0;
	}

	char url[512], root_url[512], missing[512];
	snprintf(url, sizeof(url), "s3://%s/ferry/vault-1", bucket);
	snprintf(root_url, sizeof(root_url), "s3://%s", bucket);
	snprintf(missing, sizeof(missing), "s3://%s-missing/x", bucket);

	ok_r(set_opts(secret), "set options");
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL, *b2 = NULL, *root = NULL;
	int r = ferry_blobs_open(url, 0, &b);
	ok(r == -ENOENT, "open of a bucket not yet there without create: -ENOENT (%d)", r);
	b = NULL;
	r = ferry_blobs_open(url, 1, &b);
	ok_r(r, "open %s with create", url);
	if (r < 0)
		return tap_done();
	ok_r(ferry_blobs_open(url, 1, &b2), "second open with create: bucket already ours");
	ok_r(ferry_blobs_open(root_url, 0, &root), "open the bucket root");
	if (!b2 || !root)
		return tap_done();
	ok(!strcmp(ferry_blobs_url(b), url), "URL kept as given");

	test_objects(b);
	test_list(b, root);
	test_lock(b, b2);

	struct ferry_blobs *m = NULL;
	ok(ferry_blobs_open(missing, 0, &m) == -ENOENT, "missing bucket: -ENOENT");
	ok(ferry_blobs_open("s3://x/y", 0, &m) == -EINVAL, "too short a bucket name: -EINVAL");
	ok(ferry_blobs_open("s3://bu cket/y", 0, &m) == -EINVAL, "bad bucket name: -EINVAL");

	if (auth) {
		ok_r(set_opts("wrong-secret-wrong-secret"), "options with a wrong secret");
		r = ferry_blobs_open(url, 0, &m);
		ok(r == -EACCES, "wrong secret: -EACCES (%d)", r);
		if (r >= 0)
			ferry_blobs_free(m);
		ok_r(set_opts(secret), "options with the right secret again");
		/* Opened clients copied their credentials: untouched by the change. */
		uint64_t size;
		ok(ferry_blobs_size(b, "nope", &size) == -ENOENT, "open location still works");
	} else {
		printf("# server does not check signatures: wrong-secret check skipped\n");
	}
	return tap_done();
}
