/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Azure backend against a live Azurite, run by tests/integration/azurite.sh
 * (not a unit test: it needs the server). The connection string comes from
 * AZURE_STORAGE_CONNECTION_STRING. Covers round trips, ranges, sizes, paged
 * listings, exclusive puts, deletes, a large block upload, leases, a wrong
 * key, a missing container, retries under an HTTP fault, and the blobs
 * layer's own fault seam.
 */
#include "ferry/blobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobs-internal.h"
#include "env.h"
#include "ferry/util.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)

static double now_s(void)
{
	return (double)ferry_now_ns() / 1e9;
}

struct names {
	unsigned n;
	int sorted;
	char last[256];
	uint64_t bytes;
};

static int collect(const char *name, uint64_t size, void *ud)
{
	struct names *c = ud;
	if (c->n > 0 && strcmp(c->last, name) >= 0)
		c->sorted = 0;
	snprintf(c->last, sizeof(c->last), "%s", name);
	c->n++;
	c->bytes += size;
	return 0;
}

struct http_fault {
	int fail_left;
	unsigned calls;
};

static int http_fault_cb(const char *method, const char *url, void *ud)
{
	struct http_fault *f = ud;
	f->calls++;
	if (f->fail_left > 0) {
		f->fail_left--;
		return -EAGAIN;
	}
	return 0;
}

static int blobs_fault_cb(const char *op, const char *name, void *ud)
{
	return -EIO;
}

int main(void)
{
	/* The environment as every program reads it, with fewer retries. */
	struct ferry_blobs_options o;
	env_blobs_options(&o);
	const char *cs = o.azure_connection_string;
	if (!cs) {
		printf("1..0 # SKIP AZURE_STORAGE_CONNECTION_STRING not set\n");
		return 0;
	}
	o.max_retries = 3;
	ok_r(ferry_blobs_set_options(&o), "set options");

	char url[128];
	snprintf(url, sizeof(url), "azblob://ferry-test-%ld/pre", (long)getpid());
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	struct ferry_blobs *x = NULL;
	ok(ferry_blobs_open(url, 0, &x) == -ENOENT, "missing container -> ENOENT");
	ok_r(ferry_blobs_open(url, 1, &b), "create container");
	if (!b)
		return tap_done();
	ok_r(ferry_blobs_open(url, 1, &x), "create again is fine");
	x = ferry_blobs_free(x);
	ok(strcmp(ferry_blobs_url(b), url) == 0 && ferry_blobs_local_dir(b) == NULL, "url, no dir");

	/* round trips */
	const char hello[] = "hello, azure";
	ok_r(ferry_blobs_put(b, "a", hello, sizeof(hello), 0), "put a");
	void *got = NULL;
	size_t glen = 0;
	ok_r(ferry_blobs_get(b, "a", &got, &glen), "get a");
	ok(got && glen == sizeof(hello) && memcmp(got, hello, glen) == 0, "get round trips");
	free(got);
	char part[8] = { 0 };
	ok_r(ferry_blobs_get_range(b, "a", 7, part, 5), "get_range");
	ok(memcmp(part, "azure", 5) == 0, "range bytes");
	ok(ferry_blobs_get_range(b, "a", 10, part, 8) == -EBADMSG, "range past end -> EBADMSG");
	ok(ferry_blobs_get_range(b, "a", 100, part, 2) == -EBADMSG, "range after end -> EBADMSG");
	ok(ferry_blobs_get_range(b, "nope", 0, part, 2) == -ENOENT, "range missing -> ENOENT");
	uint64_t size = 0;
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == sizeof(hello), "size");
	ok(ferry_blobs_size(b, "nope", &size) == -ENOENT, "size missing -> ENOENT");
	ok(ferry_blobs_get(b, "nope", &got, &glen) == -ENOENT, "get missing -> ENOENT");
	ok_r(ferry_blobs_put(b, "empty", "", 0, 1), "put empty");
	ok(ferry_blobs_get(b, "empty", &got, &glen) >= 0 && glen == 0, "get empty");
	free(got);

	/* exclusive, replace, delete */
	ok(ferry_blobs_put(b, "a", "x", 1, 1) == -EEXIST, "exclusive on existing -> EEXIST");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == sizeof(hello), "left alone");
	ok_r(ferry_blobs_put(b, "a", "xyz", 3, 0), "replace");
	ok(ferry_blobs_size(b, "a", &size) >= 0 && size == 3, "replaced whole");
	ok_r(ferry_blobs_delete(b, "a"), "delete");
	ok(ferry_blobs_size(b, "a", &size) == -ENOENT, "deleted");
	ok_r(ferry_blobs_delete(b, "a"), "delete again is fine");

	/* listing with pagination */
	blobs_azure_set_max_results(b, 7);
	char name[64];
	int all_put = 1;
	for (unsigned i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "seg/vm1/%05u", (i * 37) % 50);
		if (ferry_blobs_put(b, name, name, strlen(name), 1) < 0)
			all_put = 0;
	}
	ok(all_put, "put 50 blobs");
	ok_r(ferry_blobs_put(b, "seg/vm10/1", "x", 1, 1), "put a neighbour");
	struct names l = { .sorted = 1 };
	ok_r(ferry_blobs_list(b, "seg/vm1/", collect, &l), "list seg/vm1/ in pages of 7");
	ok(l.n == 50 && l.sorted && l.bytes == 50 * 13, "50 names, sorted, sizes: %u", l.n);
	struct names l2 = { .sorted = 1 };
	ok_r(ferry_blobs_list(b, "seg/vm1", collect, &l2), "list partial component");
	ok(l2.n == 51 && l2.sorted, "51 names: %u", l2.n);
	struct names l3 = { .sorted = 1 };
	ok_r(ferry_blobs_list(b, "zzz/", collect, &l3), "list nothing");
	ok(l3.n == 0, "empty listing");
	blobs_azure_set_max_results(b, 5000);

	/* the location prefix isolates: another prefix sees none of it */
	char url2[128];
	snprintf(url2, sizeof(url2), "azblob://ferry-test-%ld/other", (long)getpid());
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b2 = NULL;
	ok_r(ferry_blobs_open(url2, 0, &b2), "open second prefix");
	struct names l4 = { .sorted = 1 };
	ok(b2 && ferry_blobs_list(b2, "", collect, &l4) >= 0 && l4.n == 0, "prefixes isolate");

	/* a large blob goes up in parallel blocks */
	size_t big = 80u * 1024 * 1024 + 12345;
	_cleanup_free_ uint8_t *buf = malloc(big);
	_cleanup_free_ uint8_t *back = malloc(big);
	if (!buf || !back)
		return tap_done();
	for (size_t i = 0; i < big; i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);
	double t0 = now_s();
	ok_r(ferry_blobs_put(b, "packs/big", buf, big, 1), "put 80 MiB (blocks)");
	double t1 = now_s();
	ok_r(ferry_blobs_get_range(b, "packs/big", 0, back, big), "get 80 MiB");
	double t2 = now_s();
	ok(memcmp(buf, back, big) == 0, "big round trips");
	printf("# put %.1f MiB/s, get %.1f MiB/s\n", big / 1048576.0 / (t1 - t0),
	       big / 1048576.0 / (t2 - t1));
	ok(ferry_blobs_put(b, "packs/big", buf, big, 1) == -EEXIST, "exclusive big -> EEXIST");
	ok_r(ferry_blobs_get_range(b, "packs/big", big - 100, back, 100), "tail range");
	ok(memcmp(back, buf + big - 100, 100) == 0, "tail bytes");

	/* leases */
	struct ferry_blobs_lock *l1 = NULL, *lx = NULL;
	ok_r(ferry_blobs_lock_acquire(b, "lock", 15, &l1), "acquire lock");
	ok(ferry_blobs_lock_acquire(b, "lock", 15, &lx) == -EBUSY, "second acquire -> EBUSY");
	ok_r(l1 ? ferry_blobs_lock_renew(l1) : -EINVAL, "renew");
	l1 = ferry_blobs_lock_release(l1);
	ok_r(ferry_blobs_lock_acquire(b, "lock", 15, &lx), "acquire after release");
	lx = ferry_blobs_lock_release(lx);

	/* retries through the HTTP fault seam */
	struct http_fault hf = { .fail_left = 2 };
	ok_r(blobs_azure_set_http_fault(b, http_fault_cb, &hf), "set http fault");
	ok_r(ferry_blobs_put(b, "retried", "r", 1, 1), "put succeeds after 2 failed attempts");
	ok(hf.calls == 3, "3 attempts: %u", hf.calls);
	hf = (struct http_fault){ .fail_left = 100 };
	ok(ferry_blobs_put(b, "retried2", "r", 1, 1) == -EAGAIN, "budget exhausted -> EAGAIN");
	ok(hf.calls == 4, "1 + 3 retries: %u", hf.calls);
	blobs_azure_set_http_fault(b, NULL, NULL);
	ok(ferry_blobs_size(b, "retried2", &size) == -ENOENT, "failed put left nothing");

	/* the blobs layer's fault seam */
	ferry_blobs_set_fault(b, blobs_fault_cb, NULL);
	ok(ferry_blobs_put(b, "faulty", "x", 1, 1) == -EIO, "fault seam fails put");
	ferry_blobs_set_fault(b, NULL, NULL);
	ok(ferry_blobs_size(b, "faulty", &size) == -ENOENT, "faulted put left nothing");

	/* a wrong key */
	const char *acct = strstr(cs, "BlobEndpoint=");
	char bad[1024];
	snprintf(bad, sizeof(bad),
		 "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
		 "AccountKey=d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IHdyb25nIGtl"
		 "eSB3cm9uZyBrZXk=;%.*s",
		 acct ? (int)strcspn(acct, ";") : 0, acct ?: "");
	struct ferry_blobs_options ob = { .azure_connection_string = bad };
	ferry_blobs_set_options(&ob);
	ok(ferry_blobs_open(url, 0, &x) == -EACCES, "wrong key -> EACCES");
	ferry_blobs_set_options(&o);

	/* clean up: everything we put */
	struct names left = { .sorted = 1 };
	ferry_blobs_list(b, "", collect, &left);
	ok(left.n == 50 + 1 + 1 + 1 + 1 + 1, "blobs left: %u", left.n);
	return tap_done();
}
