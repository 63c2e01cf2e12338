/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the HTTP client against a tiny HTTP/1.1 server in a thread
 * on loopback: percent-encoding, status classification, captured response
 * headers, bodies into caller buffers (and overruns refused), uploads,
 * signing before every attempt, retries only for retryable failures and
 * only with a sleep function, the fault seam, dropped connections.
 */
#include "ferry/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

static int srv_fd;
static unsigned flaky_hits, sig_seen;
static size_t last_body;

static void serve_one(int c)
{
	char req[65536];
	size_t n = 0;
	char *end = NULL;
	while (!end && n < sizeof(req) - 1) {
		ssize_t k = read(c, req + n, sizeof(req) - 1 - n);
		if (k <= 0)
			return;
		n += (size_t)k;
		req[n] = 0;
		end = strstr(req, "\r\n\r\n");
	}
	if (!end)
		return;
	size_t clen = 0;
	const char *cl = strcasestr(req, "\r\ncontent-length:");
	if (cl && cl < end)
		clen = strtoul(cl + 17, NULL, 10);
	size_t have = n - (size_t)(end + 4 - req);
	while (have < clen) {
		char tmp[4096];
		ssize_t k = read(c, tmp, sizeof(tmp));
		if (k <= 0)
			return;
		have += (size_t)k;
	}
	last_body = have;
	if (strstr(req, "\r\nx-test-sig: "))
		__atomic_fetch_add(&sig_seen, 1, __ATOMIC_SEQ_CST);

	char method[16] = "", path[256] = "";
	if (sscanf(req, "%15s %255s", method, path) != 2)
		return;
	int status = 200;
	const char *body = "hello";
	if (strncmp(path, "/s/", 3) == 0) {
		status = atoi(path + 3);
		body = "<Error><Code>X</Code></Error>";
	} else if (strcmp(path, "/flaky") == 0) {
		if (__atomic_fetch_add(&flaky_hits, 1, __ATOMIC_SEQ_CST) < 2)
			status = 503;
	} else if (strcmp(path, "/drop") == 0) {
		return;
	} else if (strcmp(path, "/echo") == 0) {
		status = 201;
		body = "";
	} else if (strcmp(path, "/huge") == 0) {
		/* Announces 3 GiB, sends a few bytes: a client that believed it
		 * would allocate, then fail on the short body. */
		static const char huge[] = "HTTP/1.1 200 X\r\nContent-Length: 3221225472\r\n"
					   "Connection: close\r\n\r\n0123456789";
		if (strcmp(method, "HEAD") == 0)
			(void)!write(c, huge, strlen(huge) - 10);
		else
			(void)!write(c, huge, strlen(huge));
		return;
	} else if (strcmp(path, "/chunked") == 0) {
		/* No length up front: 1200 bytes in two chunks. */
		char r[2048];
		int k = snprintf(r, sizeof(r),
				 "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n"
				 "Connection: close\r\n\r\n258\r\n%0600d\r\n258\r\n%0600d\r\n"
				 "0\r\n\r\n",
				 0, 0);
		(void)!write(c, r, (size_t)k);
		return;
	}
	char resp[1024];
	int len = snprintf(resp, sizeof(resp),
			   "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nETag: \"e1\"\r\n"
			   "x-ms-request-id: req-1\r\nx-ms-lease-id: lease-1\r\n"
			   "Connection: close\r\n\r\n%s",
			   status, strcmp(method, "HEAD") == 0 ? 5 : strlen(body),
			   strcmp(method, "HEAD") == 0 ? "" : body);
	if (write(c, resp, (size_t)len) != len)
		return;
}

static void *server(void *ud)
{
	for (;;) {
		int c = accept(srv_fd, NULL, NULL);
		if (c < 0)
			return NULL;
		serve_one(c);
		close(c);
	}
}

static unsigned sleeps;
static void fake_sleep(uint64_t ns)
{
	sleeps++;
}

static unsigned signs;
static int sign_cb(void *ud, const struct ferry_http_request *req, struct ferry_http_header *out,
		   size_t max)
{
	signs++;
	out[0] = (struct ferry_http_header){ "x-test-sig", "1" };
	return 1;
}

static int fault_left, fault_err;
static int fault_cb(const char *method, const char *url, void *ud)
{
	if (fault_left > 0) {
		fault_left--;
		return fault_err;
	}
	return 0;
}

static int do_req(struct ferry_http *h, const char *method, const char *base, const char *path,
		  struct ferry_http_response *resp)
{
	char url[256];
	snprintf(url, sizeof(url), "%s%s", base, path);
	struct ferry_http_request req = { .method = method, .url = url };
	return ferry_http_do(h, &req, resp);
}

int main(void)
{
	/* escaping */
	char *e = NULL;
	ok(ferry_http_escape("a b/c~d-e_f.g%+\xc3\xa9", 1, &e) >= 0 &&
		   strcmp(e, "a%20b/c~d-e_f.g%25%2B%C3%A9") == 0,
	   "escape keeping '/': %s", e);
	free(e);
	ok(ferry_http_escape("x/y=z&", 0, &e) >= 0 && strcmp(e, "x%2Fy%3Dz%26") == 0,
	   "escape '/' too: %s", e);
	free(e);
	ok(ferry_http_escape("", 0, &e) >= 0 && strcmp(e, "") == 0, "escape empty");
	free(e);

	srv_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(srv_fd, 16) < 0 || getsockname(srv_fd, (struct sockaddr *)&sa, &sl) < 0) {
		ok(0, "server socket");
		return tap_done();
	}
	pthread_t t;
	pthread_create(&t, NULL, server, NULL);
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%u", ntohs(sa.sin_port));

	struct ferry_http *h = NULL;
	ok_r(ferry_http_new(&(struct ferry_http_options){ .timeout_s = 5 }, &h), "new client");
	if (!h)
		return tap_done();

	struct ferry_http_response resp;
	ok_r(do_req(h, "GET", base, "/ok", &resp), "GET /ok");
	ok(resp.status == 200 && resp.body_len == 5 && memcmp(resp.body, "hello", 6) == 0,
	   "body allocated and NUL-terminated");
	ok(strcmp(resp.etag, "\"e1\"") == 0 && strcmp(resp.request_id, "req-1") == 0 &&
		   strcmp(resp.lease_id, "lease-1") == 0 && resp.content_length == 5,
	   "headers captured");
	ok(resp.attempts == 1, "one attempt");
	ferry_http_response_clear(&resp);
	ok_r(do_req(h, "HEAD", base, "/ok", &resp), "HEAD");
	ok(resp.content_length == 5 && resp.body_len == 0, "HEAD has a length, no body");
	ferry_http_response_clear(&resp);

	static const struct {
		int status, err;
	} cls[] = { { 404, -ENOENT }, { 409, -EEXIST }, { 412, -EEXIST }, { 401, -EACCES },
		    { 403, -EACCES }, { 416, -ERANGE }, { 400, -EPROTO }, { 405, -EPROTO },
		    { 408, -EAGAIN }, { 429, -EAGAIN }, { 500, -EAGAIN }, { 503, -EAGAIN },
		    { 501, -EPROTO }, { 204, 0 } };
	for (size_t i = 0; i < ARRAY_SIZE(cls); i++) {
		char p[16];
		snprintf(p, sizeof(p), "/s/%d", cls[i].status);
		int r = do_req(h, "GET", base, p, &resp);
		ok(r == cls[i].err && resp.status == cls[i].status, "%d -> %d (got %d)",
		   cls[i].status, cls[i].err, r);
		if (cls[i].err)
			ok(resp.body && strstr(resp.body, "<Code>X</Code>"), "error body kept");
		ferry_http_response_clear(&resp);
	}

	/* into a caller buffer */
	char buf[16];
	struct ferry_http_request rq = {
		.method = "GET", .url = NULL, .into = buf, .into_cap = sizeof(buf)
	};
	char url[256];
	snprintf(url, sizeof(url), "%s/ok", base);
	rq.url = url;
	ok_r(ferry_http_do(h, &rq, &resp), "GET into buffer");
	ok(resp.body == NULL && resp.body_len == 5 && memcmp(buf, "hello", 5) == 0, "into filled");
	ferry_http_response_clear(&resp);
	rq.into_cap = 3;
	ok(ferry_http_do(h, &rq, &resp) == -EBADMSG, "more than the buffer -> EBADMSG");
	ferry_http_response_clear(&resp);
	snprintf(url, sizeof(url), "%s/s/404", base);
	rq.into_cap = 3;
	ok(ferry_http_do(h, &rq, &resp) == -ENOENT && resp.body, "error body not into buffer");
	ferry_http_response_clear(&resp);

	/* bounded bodies */
	snprintf(url, sizeof(url), "%s/huge", base);
	struct ferry_http_request bq = { .method = "GET", .url = url };
	ok(ferry_http_do(h, &bq, &resp) == -EFBIG && resp.body_len == 0,
	   "a 3 GiB Content-Length is -EFBIG before any of the body is kept");
	ferry_http_response_clear(&resp);
	bq.body_max = (size_t)4 << 30;
	ok(ferry_http_do(h, &bq, &resp) != -EFBIG,
	   "with a body_max above it, the same answer is not refused for its size");
	ferry_http_response_clear(&resp);
	bq.method = "HEAD";
	bq.body_max = 0;
	ok(ferry_http_do(h, &bq, &resp) == 0 && resp.content_length == 3221225472u,
	   "HEAD of a 3 GiB blob is fine: it has no body");
	ferry_http_response_clear(&resp);
	bq.method = "GET";
	snprintf(url, sizeof(url), "%s/ok", base);
	bq.body_max = 5;
	ok(ferry_http_do(h, &bq, &resp) == 0 && resp.body_len == 5, "a body of exactly body_max");
	ferry_http_response_clear(&resp);
	bq.body_max = 4;
	ok(ferry_http_do(h, &bq, &resp) == -EFBIG && !resp.body, "one byte over body_max");
	ferry_http_response_clear(&resp);
	snprintf(url, sizeof(url), "%s/chunked", base);
	bq.body_max = 1000;
	ok(ferry_http_do(h, &bq, &resp) == -EFBIG,
	   "a chunked body without a length is cut off at body_max");
	ferry_http_response_clear(&resp);
	bq.body_max = 1200;
	ok(ferry_http_do(h, &bq, &resp) == 0 && resp.body_len == 1200,
	   "a chunked body within body_max");
	ferry_http_response_clear(&resp);

	/* upload, signed */
	static char payload[200000];
	memset(payload, 'p', sizeof(payload));
	snprintf(url, sizeof(url), "%s/echo", base);
	struct ferry_http_request up = {
		.method = "PUT",
		.url = url,
		.body = payload,
		.body_len = sizeof(payload),
		.sign = sign_cb,
		.headers = (const struct ferry_http_header[]){ { "x-ms-blob-type", "BlockBlob" } },
		.nheaders = 1,
	};
	ok_r(ferry_http_do(h, &up, &resp), "PUT 200 kB");
	ok(last_body == sizeof(payload) && signs == 1 && sig_seen == 1, "body sent, signed once");
	ferry_http_response_clear(&resp);
	up.body_len = 0;
	ok_r(ferry_http_do(h, &up, &resp), "PUT empty");
	ok(last_body == 0, "empty body");
	ferry_http_response_clear(&resp);
	struct ferry_http_header bad[] = { { "x-evil", "a\r\nInjected: 1" } };
	up.headers = bad;
	ok(ferry_http_do(h, &up, &resp) == -EINVAL, "header injection refused");
	ferry_http_response_clear(&resp);

	/* no sleep: no retries */
	ok(do_req(h, "GET", base, "/flaky", &resp) == -EAGAIN && resp.attempts == 1,
	   "without sleep, a 503 is returned at once");
	ferry_http_response_clear(&resp);
	ok(do_req(h, "GET", base, "/drop", &resp) == -EAGAIN && resp.status == 0,
	   "dropped connection -> EAGAIN");
	ferry_http_response_clear(&resp);
	h = ferry_http_free(h);

	/* retries with backoff */
	ok_r(ferry_http_new(&(struct ferry_http_options){ .timeout_s = 5,
							  .max_retries = 3,
							  .sleep = fake_sleep,
							  .fault = fault_cb },
			    &h),
	     "client with retries");
	if (!h)
		return tap_done();
	flaky_hits = 0;
	signs = 0;
	snprintf(url, sizeof(url), "%s/flaky", base);
	struct ferry_http_request fr = { .method = "GET", .url = url, .sign = sign_cb };
	ok(ferry_http_do(h, &fr, &resp) == 0 && resp.attempts == 3 && sleeps == 2,
	   "flaky succeeds on the third attempt after two sleeps");
	ok(signs == 3, "signed before every attempt");
	ferry_http_response_clear(&resp);
	sleeps = 0;
	ok(do_req(h, "GET", base, "/s/404", &resp) == -ENOENT && resp.attempts == 1 && sleeps == 0,
	   "404 is not retried");
	ferry_http_response_clear(&resp);
	ok(do_req(h, "GET", base, "/s/403", &resp) == -EACCES && resp.attempts == 1,
	   "403 is not retried");
	ferry_http_response_clear(&resp);
	ok(do_req(h, "GET", base, "/s/429", &resp) == -EAGAIN && resp.attempts == 4 && sleeps == 3,
	   "429 retried within the budget");
	ferry_http_response_clear(&resp);
	fault_left = 2;
	fault_err = -ETIMEDOUT;
	ok(do_req(h, "GET", base, "/ok", &resp) == 0 && resp.attempts == 3,
	   "fault seam: two timeouts, then success");
	ferry_http_response_clear(&resp);
	fault_left = 1;
	fault_err = -EIO;
	ok(do_req(h, "GET", base, "/ok", &resp) == -EIO && resp.attempts == 1,
	   "fault seam: EIO is not retried");
	ferry_http_response_clear(&resp);
	fault_left = 0;

	/* nothing listens: refused connections are retryable */
	shutdown(srv_fd, SHUT_RDWR);
	close(srv_fd);
	ok(do_req(h, "GET", "http://127.0.0.1:1", "/", &resp) == -EAGAIN && resp.attempts == 4,
	   "connection refused -> EAGAIN after retries");
	ferry_http_response_clear(&resp);
	ferry_http_free(h);
	return tap_done();
}
