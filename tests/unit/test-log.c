/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The programs' logging: control characters escaped in every message
 * (C0, DEL, C1 as UTF-8; other UTF-8 left alone), buffers cut short and
 * never overrun or left with half an escape, and the last error kept for
 * the agent's status whatever the level shown.
 */
#include "ferry/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

static void test_escape(void)
{
	char buf[256];
	ok(strcmp(log_escape("plain /srv/a b=c#d.img", buf, sizeof(buf)),
		  "plain /srv/a b=c#d.img") == 0,
	   "printable text stays as it is");
	ok(strcmp(log_escape("\x1b[31mred\x1b[0m", buf, sizeof(buf)), "\\x1b[31mred\\x1b[0m") == 0,
	   "ESC escaped: %s", buf);
	ok(strcmp(log_escape("a\nb\rc\td\x7f", buf, sizeof(buf)), "a\\x0ab\\x0dc\\x09d\\x7f") == 0,
	   "newline, CR, tab, DEL escaped: %s", buf);
	ok(strcmp(log_escape("caf\xc3\xa9 \xc3\xbc", buf, sizeof(buf)), "caf\xc3\xa9 \xc3\xbc") ==
		   0,
	   "UTF-8 letters stay");
	ok(strcmp(log_escape("x\xc2\x9b"
			     "31m",
			     buf, sizeof(buf)),
		  "x\\xc2\\x9b31m") == 0,
	   "a C1 control (U+009B, CSI) as UTF-8 escaped: %s", buf);
	ok(strcmp(log_escape("\xc2\xa0", buf, sizeof(buf)), "\xc2\xa0") == 0,
	   "U+00A0 is no control");
	ok(strcmp(log_escape("\xc2", buf, sizeof(buf)), "\xc2") == 0,
	   "a lone lead byte at the end is left alone");
	ok(strcmp(log_escape(NULL, buf, sizeof(buf)), "") == 0, "NULL is the empty string");

	/* Cut short: never overrun, never half an escape. */
	char small[6];
	memset(small, 'Z', sizeof(small));
	log_escape("ab\x1b"
		   "cd",
		   small, sizeof(small));
	ok(strcmp(small, "ab") == 0, "an escape that does not fit is left out whole: '%s'", small);
	char tiny[1] = { 'Z' };
	log_escape("abc", tiny, sizeof(tiny));
	ok(tiny[0] == 0, "a one-byte buffer gets the NUL");
	char guard[8] = "ZZZZZZZ";
	log_escape("abc", guard, 0);
	ok(strcmp(guard, "ZZZZZZZ") == 0, "a zero-size buffer is not touched");
	char exact[7];
	log_escape("a\x01", exact, sizeof(exact));
	ok(strcmp(exact, "a\\x01") == 0, "exactly fits");
}

/* stderr into a pipe for the duration of f. */
static void capture(void (*f)(void), char *out, size_t size)
{
	int p[2];
	if (pipe(p) < 0)
		abort();
	fflush(stderr);
	int saved = dup(2);
	dup2(p[1], 2);
	close(p[1]);
	f();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ssize_t n = read(p[0], out, size - 1);
	out[n > 0 ? n : 0] = 0;
	close(p[0]);
}

static void log_hostile(void)
{
	log_error("disk %s failed", "/srv/\x1b]0;pwned\x07.img");
}

static void test_messages(void)
{
	char out[1024];
	log_set_program("test-log");
	capture(log_hostile, out, sizeof(out));
	ok(!strchr(out, '\x1b') && !strchr(out, '\x07'), "no raw control character reaches stderr");
	ok(strcmp(out, "test-log: error: disk /srv/\\x1b]0;pwned\\x07.img failed\n") == 0,
	   "the message, escaped, one line: %s", out);

	char last[256];
	log_clear_last_error();
	log_last_error(last, sizeof(last));
	ok(last[0] == 0, "no last error after a clear");
	log_set_max_level(-1);
	log_error_errno(-EINVAL, "VM %s: disk %s changed size", "vm1", "vda\n");
	log_warning("only a warning");
	log_last_error(last, sizeof(last));
	ok(strcmp(last, "VM vm1: disk vda\\x0a changed size: Invalid argument") == 0,
	   "the last error is kept, escaped and with its errno, even when not shown: %s", last);
	char cut[8];
	log_last_error(cut, sizeof(cut));
	ok(strcmp(cut, "VM vm1:") == 0, "and cut short to the caller's buffer");
	log_clear_last_error();
	log_last_error(last, sizeof(last));
	ok(last[0] == 0, "cleared again");
	log_set_max_level(LOG_INFO);
}

int main(void)
{
	test_escape();
	test_messages();
	return tap_done();
}
