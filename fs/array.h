/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Growable arrays for ferryfs's modules: the snapshot's records and the
 * registry's tables are plain arrays with a count, grown one element at a
 * time (they hold tens of entries, rebuilt rarely).
 */
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * Appends one zeroed element of size bytes to the array *pp of *n elements
 * and returns it; *pp may move. NULL when out of memory, leaving *pp and *n
 * as they were.
 */
static inline void *grow(void *pp, size_t *n, size_t size)
{
	void **p = pp;
	void *q;

	q = realloc(*p, (*n + 1) * size);
	if (!q)
		return NULL;
	*p = q;
	q = (uint8_t *)q + *n * size;
	memset(q, 0, size);
	(*n)++;
	return q;
}
