/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The part of http.c that reads bytes from the server without libcurl in
 * the way, exposed for its fuzz target: the response header parser that
 * fills the selected headers of a ferry_http_response.
 */
#pragma once

#include <stddef.h>

#include "ferry/http.h"

/* Takes one header line as libcurl hands it over (n bytes, CRLF included,
 * not NUL-terminated) into r: a status line resets the selected headers, a
 * selected header sets its field ("" when too long for it), anything else
 * is ignored. Never fails. */
void http_header_line(struct ferry_http_response *r, const char *line, size_t n);
