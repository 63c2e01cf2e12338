/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The part of http.c that reads bytes from the server without libcurl in
 * the way, exposed for its fuzz target: the response header parser that
 * fills the selected headers of a ferry_http_response, and the bound on
 * the body those headers announce.
 */
#pragma once

#include <stddef.h>

#include "ferry/http.h"

/* Takes one header line as libcurl hands it over (n bytes, CRLF included,
 * not NUL-terminated) into r: a status line resets the selected headers, a
 * selected header sets its field ("" when too long for it), anything else
 * is ignored. Never fails. */
void http_header_line(struct ferry_http_response *r, const char *line, size_t n);

/* 1 when the headers so far (r, under HTTP status) announce a body that
 * req does not take: a successful answer whose Content-Length is over
 * req->body_max (FERRY_HTTP_BODY_MAX when 0), to a request that wants its
 * body allocated (no into) and is not a HEAD, whose length says what a GET
 * would send. The client then stops before the body. */
int http_body_refused(const struct ferry_http_request *req, long status,
		      const struct ferry_http_response *r);
