/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The core's caches' bookkeeping, intrusive, in two layers. A list in
 * least-recently-used order (struct lru_list of struct lru_link) serves any
 * cache that finds its entries some other way (the map's decoded nodes,
 * reached through their parents). A hash table keyed by 32-byte ids with
 * such a list (struct lru_table of struct lru_node) serves the caches of
 * objects: the chunk cache (image.c) and the disk cache's index
 * (diskcache.c). The caller embeds a link or a node in each entry and owns
 * everything else: the entries' memory, the locking, what counts against a
 * bound (bytes, entries) and when to evict. An entry may be in a table
 * without being on its list (the chunk cache keeps chunks being loaded out
 * of eviction's reach that way); on the list implies in the table.
 *
 * Ids are SHA-256 (or HMAC) output, so their first 8 bytes are already a
 * uniform hash. What a cache hit does (find, touch) is inline: it is on
 * ferryfs's read path. Lists and tables point into themselves: never copy
 * or move one after its init.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ferry/crypto.h"

/* The entry that holds ptr, its member; clang-format would take (ptr) for a cast. */
/* clang-format off */
#define lru_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))
/* clang-format on */

/* ---- the list ---- */

struct lru_link {
	struct lru_link *prev, *next; /* next is NULL while not on a list */
};

struct lru_list {
	struct lru_link head; /* head.next: the most recently used; head.prev: the least */
	size_t n;             /* links on the list */
};

static inline void lru_list_init(struct lru_list *l)
{
	l->head.prev = l->head.next = &l->head;
	l->n = 0;
}

static inline bool lru_linked(const struct lru_link *k)
{
	return k->next != NULL;
}

/* k, not on a list, becomes the most recently used. */
static inline void lru_list_push(struct lru_list *l, struct lru_link *k)
{
	k->prev = &l->head;
	k->next = l->head.next;
	l->head.next->prev = k;
	l->head.next = k;
	l->n++;
}

/* Takes k off the list; a link on none is left alone. */
static inline void lru_list_unlink(struct lru_list *l, struct lru_link *k)
{
	if (!lru_linked(k))
		return;
	k->prev->next = k->next;
	k->next->prev = k->prev;
	k->prev = k->next = NULL;
	l->n--;
}

/* k, if it is on the list, becomes the most recently used. */
static inline void lru_list_touch(struct lru_list *l, struct lru_link *k)
{
	if (!lru_linked(k) || l->head.next == k)
		return;
	k->prev->next = k->next;
	k->next->prev = k->prev;
	k->prev = &l->head;
	k->next = l->head.next;
	l->head.next->prev = k;
	l->head.next = k;
}

/* The least recently used link, NULL when the list is empty. */
static inline struct lru_link *lru_list_oldest(const struct lru_list *l)
{
	return l->n ? l->head.prev : NULL;
}

/* ---- the table ---- */

struct lru_node {
	struct ferry_id id;     /* the key: set before lru_table_insert(), then left alone */
	struct lru_node *hnext; /* the bucket's chain */
	struct lru_link link;   /* on the table's list */
};

struct lru_table {
	struct lru_node **buckets;
	size_t mask; /* buckets - 1; their number is a power of two */
	size_t n;    /* nodes in the table, listed or not */
	struct lru_list list;
};

/* An empty table of at least nbuckets buckets (the next power of two).
 * -ENOMEM. */
int lru_table_init(struct lru_table *t, size_t nbuckets);
/* Frees the buckets, not the nodes (see lru_table_clear). NULL buckets
 * (a table never initialised, zeroed) are fine. */
void lru_table_done(struct lru_table *t);
/* Twice the buckets, for a table that grows with its entries (the caller
 * decides when: say when n passes the number of buckets). -ENOMEM leaves
 * the table as it was, which still works: its chains are just longer. */
int lru_table_grow(struct lru_table *t);
/* Takes every node out of the table and its list and hands each to fn
 * (which may free it), in no particular order. */
void lru_table_clear(struct lru_table *t, void (*fn)(struct lru_node *e, void *userdata),
		     void *userdata);
/* Takes e, which is in the table, out of it and off its list. */
void lru_table_remove(struct lru_table *t, struct lru_node *e);

static inline struct lru_node **lru_table_bucket(const struct lru_table *t,
						 const struct ferry_id *id)
{
	uint64_t h;

	memcpy(&h, id->b, sizeof(h));
	return &t->buckets[h & t->mask];
}

static inline struct lru_node *lru_table_find(const struct lru_table *t, const struct ferry_id *id)
{
	for (struct lru_node *e = *lru_table_bucket(t, id); e; e = e->hnext)
		if (memcmp(&e->id, id, sizeof(*id)) == 0)
			return e;
	return NULL;
}

/* Adds e (its id set, not in the table yet) to the table, not to the list. */
static inline void lru_table_insert(struct lru_table *t, struct lru_node *e)
{
	struct lru_node **b = lru_table_bucket(t, &e->id);

	e->hnext = *b;
	*b = e;
	e->link.prev = e->link.next = NULL;
	t->n++;
}

/* e, in the table and not on its list, becomes the most recently used. */
static inline void lru_table_push(struct lru_table *t, struct lru_node *e)
{
	lru_list_push(&t->list, &e->link);
}

/* e, if it is on the table's list, becomes the most recently used. */
static inline void lru_table_touch(struct lru_table *t, struct lru_node *e)
{
	lru_list_touch(&t->list, &e->link);
}

/* The least recently used node on the list, NULL when it is empty. */
static inline struct lru_node *lru_table_oldest(const struct lru_table *t)
{
	struct lru_link *k = lru_list_oldest(&t->list);

	return k ? lru_container_of(k, struct lru_node, link) : NULL;
}
