/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The out-of-line part of the caches' hash table (lru.h): what allocates,
 * and what walks a chain or every bucket. Nothing here is on a cache hit's
 * path.
 */
#include "lru.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

int lru_table_init(struct lru_table *t, size_t nbuckets)
{
	size_t n = 1;

	while (n < nbuckets && n < SIZE_MAX / 2 / sizeof(*t->buckets))
		n <<= 1;
	*t = (struct lru_table){ .buckets = calloc(n, sizeof(*t->buckets)), .mask = n - 1 };
	if (!t->buckets)
		return -ENOMEM;
	lru_list_init(&t->list);
	return 0;
}

void lru_table_done(struct lru_table *t)
{
	free(t->buckets);
	t->buckets = NULL;
}

int lru_table_grow(struct lru_table *t)
{
	size_t n = (t->mask + 1) * 2;
	struct lru_node **old = t->buckets;
	size_t oldn = t->mask + 1;

	if (n > SIZE_MAX / sizeof(*t->buckets))
		return -ENOMEM;
	t->buckets = calloc(n, sizeof(*t->buckets));
	if (!t->buckets) {
		t->buckets = old;
		return -ENOMEM;
	}
	t->mask = n - 1;
	for (size_t i = 0; i < oldn; i++)
		for (struct lru_node *e = old[i], *next; e; e = next) {
			struct lru_node **b = lru_table_bucket(t, &e->id);

			next = e->hnext;
			e->hnext = *b;
			*b = e;
		}
	free(old);
	return 0;
}

void lru_table_clear(struct lru_table *t, void (*fn)(struct lru_node *e, void *userdata),
		     void *userdata)
{
	for (size_t i = 0; t->buckets && i <= t->mask; i++)
		for (struct lru_node *e = t->buckets[i], *next; e; e = next) {
			next = e->hnext;
			e->hnext = NULL;
			e->link.prev = e->link.next = NULL;
			fn(e, userdata);
		}
	if (t->buckets)
		memset(t->buckets, 0, (t->mask + 1) * sizeof(*t->buckets));
	t->n = 0;
	lru_list_init(&t->list);
}

void lru_table_remove(struct lru_table *t, struct lru_node *e)
{
	struct lru_node **p = lru_table_bucket(t, &e->id);

	while (*p != e) {
		assert(*p); /* e is in the table */
		p = &(*p)->hnext;
	}
	*p = e->hnext;
	e->hnext = NULL;
	lru_list_unlink(&t->list, &e->link);
	t->n--;
}
