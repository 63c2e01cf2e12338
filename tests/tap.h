/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A minimal TAP producer for the unit tests: plan-less, one line per check,
 * exit status 1 if any check failed. Checks never abort, so one run reports
 * every failure.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                   \
	do {                                                                            \
		int _c_ = !!(cond);                                                     \
		tap_n++;                                                                \
		if (!_c_)                                                               \
			tap_failed++;                                                   \
		printf("%sok %d - ", _c_ ? "" : "not ", tap_n);                         \
		printf(__VA_ARGS__);                                                    \
		printf("\n");                                                           \
		if (!_c_)                                                               \
			printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
	} while (0)

/* r is an -errno style return; passes when r >= 0. */
#define ok_r(r, ...)                                                           \
	do {                                                                   \
		int _r_ = (r);                                                 \
		ok(_r_ >= 0, __VA_ARGS__);                                     \
		if (_r_ < 0)                                                   \
			printf("#   returned %d (%s)\n", _r_, strerror(-_r_)); \
	} while (0)

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
